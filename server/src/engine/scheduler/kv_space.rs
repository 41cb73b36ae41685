//! The KV blocks a scheduler hands out: the pool, and the prefix cache whose unused entries are
//! freed on demand.

use epas_model::SharingPlan;
use epas_model::{BlockPool, BlockSet, PagedSequence, PrefixCache};

pub(crate) struct KvSpace {
    pool: BlockPool,
    prefix: Option<PrefixCache>,
}

impl KvSpace {
    pub fn new(pool: BlockPool, prefix: Option<PrefixCache>) -> Self {
        Self { pool, prefix }
    }

    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    pub fn block_size(&self) -> usize {
        self.pool.block_size()
    }

    pub fn total_blocks(&self) -> usize {
        self.pool.stats().total
    }

    pub fn free_blocks(&self) -> usize {
        self.pool.free_blocks()
    }

    /// Blocks held only by the prefix cache (evicted when room is needed).
    pub fn cached_blocks(&self) -> usize {
        self.prefix.as_ref().map_or(0, |p| p.stats().cached_blocks)
    }

    /// Blocks that free ones plus evictions can provide.
    pub fn available(&self) -> usize {
        self.free_blocks() + self.cached_blocks()
    }

    /// Gets `needed` blocks free, evicting least recently used prefix-cache entries.
    pub fn make_room(&mut self, needed: usize) -> bool {
        let free = self.free_blocks();
        if free >= needed {
            return true;
        }
        if let Some(prefix) = self.prefix.as_mut() {
            prefix.evict(needed - free);
        }
        self.free_blocks() >= needed
    }

    /// Cached full blocks at the start of `tokens` under `plan` (held by the returned sets).
    pub fn lookup(&mut self, plan: &SharingPlan, tokens: &[u32]) -> Vec<BlockSet> {
        match self.prefix.as_mut() {
            Some(p) => p.lookup(plan, tokens),
            None => Vec::new(),
        }
    }

    pub fn prefix_enabled(&self) -> bool {
        self.prefix.is_some()
    }

    /// Offers a finished sequence's full blocks to the prefix cache.
    pub fn remember(&mut self, plan: &SharingPlan, tokens: &[u32], cache: &PagedSequence) {
        if let Some(prefix) = self.prefix.as_mut() {
            use epas_model::KvCache;
            prefix.insert(plan, &tokens[..cache.len()], cache.full_blocks());
        }
    }
}
