//! Hooks through which the engine reports what it does, measured at engine steps (the HTTP
//! layer turns them into Prometheus metrics). Every method has a no-op default.

use std::time::Duration;

use super::request::FinishReason;

/// Which work a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPhase {
    Prefill,
    Decode,
    Mixed,
}

impl StepPhase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Prefill => "prefill",
            Self::Decode => "decode",
            Self::Mixed => "mixed",
        }
    }
}

/// `ratio` arguments are the effective sharing ratio `k / L` of the sequence.
pub trait EngineObserver: Send + Sync {
    fn admitted(&self, _ratio: f64, _queue_time: Duration) {}
    fn first_token(&self, _ratio: f64, _time_to_first_token: Duration) {}
    fn inter_token(&self, _ratio: f64, _latency: Duration) {}
    fn generated(&self, _ratio: f64, _tokens: usize) {}
    fn prompt_processed(&self, _ratio: f64, _tokens: usize) {}
    fn finished(&self, _ratio: f64, _reason: FinishReason, _e2e: Duration) {}
    fn cancelled(&self, _ratio: f64) {}
    /// A first admission looked `queried` prompt tokens up in the prefix cache and found
    /// the first `hit` of them cached.
    fn prefix_looked_up(&self, _ratio: f64, _queried: usize, _hit: usize) {}
    fn preempted(&self) {}
    /// One check of `drafted` draft tokens of which the first `accepted` were kept.
    fn speculated(&self, _ratio: f64, _drafted: usize, _accepted: usize) {}
    fn step(&self, _phase: StepPhase, _batch_size: usize, _tokens: usize, _duration: Duration) {}
}

/// Observes nothing.
pub struct NoObserver;

impl EngineObserver for NoObserver {}
