//! One choice of a request as the engine tracks it.

use std::sync::Arc;
use std::time::Instant;

use epas_model::paged::PagedSequence;
use epas_model::sampler::Sampler;
use epas_model::{IncrementalDecoder, KvCache, SharingPlan};

use super::request::GenerationParams;
use super::stop::StopMatcher;

pub(crate) struct Sequence {
    pub request_id: u64,
    pub index: usize,
    pub plan: SharingPlan,
    pub params: Arc<GenerationParams>,
    /// Prompt followed by the generated tokens.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// `None` while waiting (or after preemption: the cache is recomputed on re-admission).
    pub cache: Option<PagedSequence>,
    pub sampler: Sampler,
    pub decoder: IncrementalDecoder,
    pub stop: StopMatcher,
    pub arrival: Instant,
    pub first_token_at: Option<Instant>,
    pub last_token_at: Option<Instant>,
    pub cached_tokens: usize,
    pub admitted: bool,
}

impl Sequence {
    pub fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Positions whose K/V are in the cache.
    pub fn computed(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }

    /// Tokens still to run through the model before the next token can be sampled.
    pub fn pending(&self) -> usize {
        self.tokens.len() - self.computed()
    }

    pub fn ratio(&self) -> f64 {
        self.plan.effective_ratio()
    }
}
