//! Ratio-aware prefix cache: full blocks of finished sequences, keyed by the chain of token
//! blocks before them and by the sharing depth (the same tokens under another plan have
//! different K/V).
//!
//! A block is found by its whole link (the entry before it, the sharing depth, its tokens), not
//! by a hash of it: the hash only picks the bucket, and it is keyed per cache (`RandomState`), so
//! collisions can neither be computed offline nor hand one prompt another prompt's K/V.

use std::cmp::Reverse;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use crate::sharing::SharingPlan;

use super::sequence::BlockSet;

/// The id of the chain's start, before the first block.
const ROOT: u64 = 0;

/// What a cached block is computed from: the entry before it (its id), the sharing depth and the
/// block's own tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Link {
    parent: u64,
    sharing_layers: usize,
    tokens: Vec<u32>,
}

struct Entry {
    /// Unique in the cache's lifetime: an entry inserted again after eviction gets a new one, so
    /// blocks cached after the old one are never reached through the new one.
    id: u64,
    /// The block's index in its sequence: a chain is evicted from its tail.
    index: usize,
    blocks: BlockSet,
    last_used: u64,
}

impl Entry {
    /// Whether only the cache holds these blocks (evicting them frees pool blocks).
    fn unused(&self) -> bool {
        self.blocks.values.iter().all(|b| Arc::strong_count(b) == 1)
    }

    fn block_count(&self) -> usize {
        self.blocks.keys.iter().flatten().count() + self.blocks.values.len()
    }
}

/// What the cache holds. (Hits and misses are counted by its user, once per query that
/// matters: a lookup can be repeated while a request waits for room.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixStats {
    /// Blocks only the cache holds (freed by eviction).
    pub cached_blocks: usize,
}

pub struct PrefixCache<S = RandomState> {
    block_size: usize,
    entries: HashMap<Link, Entry, S>,
    next_id: u64,
    clock: u64,
}

impl PrefixCache {
    pub fn new(block_size: usize) -> Self {
        Self::with_hasher(block_size, RandomState::new())
    }
}

impl<S: BuildHasher> PrefixCache<S> {
    pub(crate) fn with_hasher(block_size: usize, hasher: S) -> Self {
        Self {
            block_size,
            entries: HashMap::with_hasher(hasher),
            next_id: ROOT + 1,
            clock: 0,
        }
    }

    /// Cached full blocks at the start of `prompt` under `plan`. At least one prompt token is
    /// always left to compute, so the caller gets logits for the last position.
    pub fn lookup(&mut self, plan: &SharingPlan, prompt: &[u32]) -> Vec<BlockSet> {
        self.clock += 1;
        let usable = prompt.len().saturating_sub(1) / self.block_size;
        let mut link = self.root_link(plan);
        let mut found = Vec::new();
        for tokens in prompt[..usable * self.block_size].chunks_exact(self.block_size) {
            link.tokens.clear();
            link.tokens.extend_from_slice(tokens);
            let Some(e) = self.entries.get_mut(&link) else {
                break;
            };
            e.last_used = self.clock;
            found.push(e.blocks.clone());
            link.parent = e.id;
        }
        found
    }

    /// Remembers the full blocks of a sequence whose cached positions hold `tokens`. A block
    /// already cached under the same link keeps its blocks (they hold the same K/V).
    pub fn insert(&mut self, plan: &SharingPlan, tokens: &[u32], blocks: Vec<BlockSet>) {
        self.clock += 1;
        let mut link = self.root_link(plan);
        for ((index, set), block_tokens) in blocks
            .into_iter()
            .enumerate()
            .zip(tokens.chunks_exact(self.block_size))
        {
            link.tokens.clear();
            link.tokens.extend_from_slice(block_tokens);
            let entry = self.entries.entry(link.clone()).or_insert_with(|| {
                self.next_id += 1;
                Entry {
                    id: self.next_id,
                    index,
                    blocks: set,
                    last_used: self.clock,
                }
            });
            entry.last_used = self.clock;
            link.parent = entry.id;
        }
    }

    fn root_link(&self, plan: &SharingPlan) -> Link {
        Link {
            parent: ROOT,
            sharing_layers: plan.sharing_layers(),
            tokens: Vec::with_capacity(self.block_size),
        }
    }

    /// Drops least recently used entries that no sequence uses, the tail of a chain before its
    /// head, until at least `blocks` pool blocks have been released; returns how many were.
    pub fn evict(&mut self, blocks: usize) -> usize {
        let mut candidates: Vec<(u64, Reverse<usize>, &Link, usize)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.unused())
            .map(|(link, e)| (e.last_used, Reverse(e.index), link, e.block_count()))
            .collect();
        candidates.sort_unstable_by_key(|&(last_used, index, _, _)| (last_used, index));
        let mut released = 0;
        let mut doomed = Vec::new();
        for (_, _, link, count) in candidates {
            if released >= blocks {
                break;
            }
            released += count;
            doomed.push(link.clone());
        }
        for link in doomed {
            self.entries.remove(&link);
        }
        released
    }

    /// The hash of a first block's chain link.
    #[cfg(test)]
    fn chain_hash(&self, sharing_layers: usize, tokens: &[u32]) -> u64 {
        self.entries.hasher().hash_one(Link {
            parent: ROOT,
            sharing_layers,
            tokens: tokens.to_vec(),
        })
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn stats(&self) -> PrefixStats {
        PrefixStats {
            cached_blocks: self
                .entries
                .values()
                .filter(|e| e.unused())
                .map(Entry::block_count)
                .sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paged::BlockPool;
    use crate::KvDtype;
    use std::hash::Hasher;

    /// Every key hashes alike: what an attacker who found collisions would get.
    #[derive(Default)]
    struct Colliding;

    impl BuildHasher for Colliding {
        type Hasher = ConstantHasher;
        fn build_hasher(&self) -> ConstantHasher {
            ConstantHasher
        }
    }

    struct ConstantHasher;

    impl Hasher for ConstantHasher {
        fn finish(&self) -> u64 {
            7
        }
        fn write(&mut self, _: &[u8]) {}
    }

    const BLOCK: usize = 4;

    /// `n` block sets, each with one value block of its own (told apart by pointer).
    fn blocks(pool: &BlockPool, n: usize) -> Vec<BlockSet> {
        pool.take(n)
            .unwrap()
            .into_iter()
            .map(|b| BlockSet {
                keys: Vec::new(),
                values: vec![Arc::new(b)],
            })
            .collect()
    }

    fn same(a: &[BlockSet], b: &[BlockSet]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| Arc::ptr_eq(&x.values[0], &y.values[0]))
    }

    fn plan(sharing_layers: usize) -> SharingPlan {
        SharingPlan::with_sharing_layers(8, sharing_layers).unwrap()
    }

    #[test]
    fn colliding_keys_never_return_blocks_of_another_depth_or_other_tokens() {
        let pool = BlockPool::new(64, BLOCK, 2, KvDtype::F32).unwrap();
        let mut cache = PrefixCache::with_hasher(BLOCK, Colliding);
        let prompt: Vec<u32> = (0..13).collect();
        let mut other_tokens = prompt.clone();
        other_tokens[5] = 99;

        let deep = blocks(&pool, 3);
        cache.insert(&plan(3), &prompt, deep.clone());
        let shallow = blocks(&pool, 3);
        cache.insert(&plan(1), &prompt, shallow.clone());

        let never_cached = cache.lookup(&plan(2), &prompt);
        assert!(
            never_cached.is_empty(),
            "no chain was cached under depth 2, yet {} blocks came back (the first is depth 3's: {})",
            never_cached.len(),
            same(&never_cached[..1.min(never_cached.len())], &deep[..1]),
        );
        assert!(
            same(&cache.lookup(&plan(1), &prompt), &shallow),
            "depth 1 gets the blocks computed under depth 1"
        );
        assert!(same(&cache.lookup(&plan(3), &prompt), &deep));
        let hit = cache.lookup(&plan(3), &other_tokens);
        assert!(
            same(&hit, &deep[..1]),
            "only the first block's tokens match; got {} blocks",
            hit.len()
        );
        let fresh: Vec<u32> = (100..113).collect();
        assert!(cache.lookup(&plan(3), &fresh).is_empty());
    }

    #[test]
    fn eviction_drops_a_chain_from_its_tail_and_a_reinserted_head_starts_afresh() {
        let pool = BlockPool::new(64, BLOCK, 2, KvDtype::F32).unwrap();
        let mut cache = PrefixCache::new(BLOCK);
        let prompt: Vec<u32> = (0..13).collect();
        let chain = blocks(&pool, 3);
        cache.insert(&plan(2), &prompt, chain.clone());
        drop(chain);
        assert_eq!(cache.evict(1), 1);
        assert!(same(
            &cache.lookup(&plan(2), &prompt),
            &cache.lookup(&plan(2), &prompt[..9])
        ));
        assert_eq!(
            cache.lookup(&plan(2), &prompt).len(),
            2,
            "the tail went first"
        );
        assert_eq!(cache.evict(usize::MAX), 2);
        assert_eq!(pool.stats().used(), 0);

        // A running sequence holds the second block, so only the first is evicted; blocks
        // cached after an entry are reached through that entry only, never a later one.
        let chain = blocks(&pool, 2);
        cache.insert(&plan(2), &prompt, chain.clone());
        let held = chain[1].clone();
        drop(chain);
        assert_eq!(cache.evict(usize::MAX), 1);
        let head = blocks(&pool, 1);
        cache.insert(&plan(2), &prompt, head.clone());
        assert!(same(&cache.lookup(&plan(2), &prompt), &head));
        drop(held);
    }

    #[test]
    fn each_cache_keys_its_hash_on_its_own() {
        let a = PrefixCache::new(BLOCK);
        let b = PrefixCache::new(BLOCK);
        let tokens = [1, 2, 3, 4];
        assert_ne!(
            a.chain_hash(3, &tokens),
            b.chain_hash(3, &tokens),
            "a fixed-key hash lets collisions be computed offline"
        );
    }
}
