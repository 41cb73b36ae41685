//! Counters and gauges the engine thread publishes for handlers, metrics and tests.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

#[derive(Debug, Default)]
pub struct EngineState {
    /// Sequences holding a KV cache.
    pub running: AtomicUsize,
    /// Requests submitted and not yet admitted.
    pub waiting: AtomicUsize,
    pub kv_blocks_total: AtomicUsize,
    /// Blocks held by running sequences.
    pub kv_blocks_used: AtomicUsize,
    /// Blocks held only by the prefix cache (freed on demand).
    pub kv_blocks_cached: AtomicUsize,
    pub prefix_hits: AtomicU64,
    pub prefix_misses: AtomicU64,
    pub preemptions: AtomicU64,
    pub cancellations: AtomicU64,
    pub steps: AtomicU64,
    /// Set while shutting down: new requests are refused.
    pub draining: AtomicBool,
    /// Set when the engine thread has exited.
    pub stopped: AtomicBool,
    /// The message of the panic that ended the engine thread, if one did.
    pub failure: OnceLock<String>,
}

/// A plain copy of [`EngineState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineSnapshot {
    pub running: usize,
    pub waiting: usize,
    pub kv_blocks_total: usize,
    pub kv_blocks_used: usize,
    pub kv_blocks_cached: usize,
    pub prefix_hits: u64,
    pub prefix_misses: u64,
    pub preemptions: u64,
    pub cancellations: u64,
    pub steps: u64,
}

impl EngineState {
    pub fn snapshot(&self) -> EngineSnapshot {
        // `running` is read first: the engine stores it last (see `Worker::publish`).
        let r = Ordering::SeqCst;
        EngineSnapshot {
            running: self.running.load(r),
            waiting: self.waiting.load(r),
            kv_blocks_total: self.kv_blocks_total.load(r),
            kv_blocks_used: self.kv_blocks_used.load(r),
            kv_blocks_cached: self.kv_blocks_cached.load(r),
            prefix_hits: self.prefix_hits.load(r),
            prefix_misses: self.prefix_misses.load(r),
            preemptions: self.preemptions.load(r),
            cancellations: self.cancellations.load(r),
            steps: self.steps.load(r),
        }
    }
}
