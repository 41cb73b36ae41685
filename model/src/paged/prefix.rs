//! Ratio-aware prefix cache: full blocks of finished sequences, keyed by the chain of token
//! blocks before them and by the sharing depth (the same tokens under another plan have
//! different K/V).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::sharing::SharingPlan;

use super::sequence::BlockSet;

struct Entry {
    parent: u64,
    tokens: Vec<u32>,
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

/// Hit and miss counts since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixStats {
    pub hits: u64,
    pub misses: u64,
    pub cached_blocks: usize,
}

pub struct PrefixCache {
    block_size: usize,
    entries: HashMap<u64, Entry>,
    clock: u64,
    hits: u64,
    misses: u64,
}

fn chain_key(parent: u64, sharing_layers: usize, tokens: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    parent.hash(&mut h);
    sharing_layers.hash(&mut h);
    tokens.hash(&mut h);
    h.finish() | 1
}

impl PrefixCache {
    pub fn new(block_size: usize) -> Self {
        Self {
            block_size,
            entries: HashMap::new(),
            clock: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// Cached full blocks at the start of `prompt` under `plan`. At least one prompt token is
    /// always left to compute, so the caller gets logits for the last position.
    pub fn lookup(&mut self, plan: &SharingPlan, prompt: &[u32]) -> Vec<BlockSet> {
        self.clock += 1;
        let usable = prompt.len().saturating_sub(1) / self.block_size;
        let mut parent = 0u64;
        let mut found = Vec::new();
        for b in 0..usable {
            let tokens = &prompt[b * self.block_size..(b + 1) * self.block_size];
            let key = chain_key(parent, plan.sharing_layers(), tokens);
            match self.entries.get_mut(&key) {
                Some(e) if e.parent == parent && e.tokens == tokens => {
                    e.last_used = self.clock;
                    found.push(e.blocks.clone());
                    parent = key;
                }
                _ => break,
            }
        }
        if found.is_empty() {
            self.misses += 1;
        } else {
            self.hits += 1;
        }
        found
    }

    /// Remembers the full blocks of a sequence whose cached positions hold `tokens`.
    pub fn insert(&mut self, plan: &SharingPlan, tokens: &[u32], blocks: Vec<BlockSet>) {
        self.clock += 1;
        let mut parent = 0u64;
        for (b, set) in blocks.into_iter().enumerate() {
            let Some(block_tokens) = tokens.get(b * self.block_size..(b + 1) * self.block_size)
            else {
                break;
            };
            let key = chain_key(parent, plan.sharing_layers(), block_tokens);
            let clock = self.clock;
            self.entries.entry(key).or_insert_with(|| Entry {
                parent,
                tokens: block_tokens.to_vec(),
                blocks: set,
                last_used: clock,
            });
            parent = key;
        }
    }

    /// Drops least recently used entries that no sequence uses until at least `blocks` pool
    /// blocks have been released; returns how many were.
    pub fn evict(&mut self, blocks: usize) -> usize {
        let mut candidates: Vec<(u64, u64)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.unused())
            .map(|(k, e)| (e.last_used, *k))
            .collect();
        candidates.sort_unstable();
        let mut released = 0;
        for (_, key) in candidates {
            if released >= blocks {
                break;
            }
            if let Some(e) = self.entries.remove(&key) {
                released += e.block_count();
            }
        }
        released
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn stats(&self) -> PrefixStats {
        PrefixStats {
            hits: self.hits,
            misses: self.misses,
            cached_blocks: self
                .entries
                .values()
                .filter(|e| e.unused())
                .map(Entry::block_count)
                .sum(),
        }
    }
}
