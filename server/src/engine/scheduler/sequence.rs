//! One choice of a request as the scheduler tracks it, waiting or running.

use std::sync::Arc;
use std::time::Instant;

use epas_model::PagedSequence;
use epas_model::Sampler;
use epas_model::{IncrementalDecoder, KvCache, SharingPlan};
use llguidance::Matcher;

use crate::engine::request::GenerationParams;
use crate::engine::speculative::DraftRecord;
use crate::engine::stop::StopMatcher;

/// Choice `index` of request `request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SeqId {
    pub request: u64,
    pub index: usize,
}

pub(crate) struct Sequence {
    pub id: SeqId,
    pub plan: SharingPlan,
    pub params: Arc<GenerationParams>,
    /// Prompt followed by the generated tokens.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    pub sampler: Sampler,
    pub decoder: IncrementalDecoder,
    pub stop: StopMatcher,
    pub arrival: Instant,
    pub last_token_at: Option<Instant>,
    /// Set at the first admission (queue time and the prefix-cache query count once).
    pub admitted_once: bool,
    pub drafts: DraftRecord,
    /// The output constraint's state after the tokens generated so far.
    pub constraint: Option<Matcher>,
}

impl Sequence {
    pub fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    pub fn ratio(&self) -> f64 {
        self.plan.effective_ratio()
    }

    /// Tokens that may not be sampled now: EOS and stop tokens before `min_tokens`.
    pub fn banned_tokens(&self, eos: &[u32]) -> Vec<u32> {
        let params = &self.params;
        if self.generated() >= params.min_tokens {
            return Vec::new();
        }
        let mut banned = params.stop_token_ids.clone();
        if !params.ignore_eos {
            banned.extend_from_slice(eos);
        }
        banned
    }
}

/// A sequence holding a KV cache.
pub(crate) struct Running {
    pub seq: Sequence,
    pub cache: PagedSequence,
}

impl Running {
    /// Tokens still to run through the model before the next token can be sampled (the last
    /// sampled token, or what is left of the prompt).
    pub fn pending(&self) -> usize {
        self.seq.tokens.len() - self.cache.len()
    }

    /// Whether the next step only runs its last sampled token (no prompt left to prefill).
    pub fn is_decoding(&self) -> bool {
        self.pending() == 1 && self.cache.len() >= self.seq.prompt_len
    }
}
