//! What a caller submits to the engine and what it receives back.

use epas_model::SamplingParams;
use epas_model::SharingPlan;

use super::structured::RequestConstraint;

/// Why one choice ended (the model crate's, so `generate` and the engine say it alike).
pub use epas_model::FinishReason;

/// Generation settings of one request.
#[derive(Debug, Clone)]
pub struct GenerationParams {
    pub max_tokens: usize,
    /// EOS and stop strings are ignored until this many tokens were generated (vLLM).
    pub min_tokens: usize,
    /// Generation ends before any of these strings; they are not emitted.
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    /// Keep generating through EOS tokens (vLLM; load tests use it).
    pub ignore_eos: bool,
    pub sampling: SamplingParams,
    /// Independent completions of the same prompt; choice `i` samples with seed `seed + i`.
    pub n: usize,
    /// Whether drafted tokens may be checked for this request when the engine drafts.
    pub speculative: bool,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_tokens: 16,
            min_tokens: 0,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            sampling: SamplingParams::default(),
            n: 1,
            speculative: true,
        }
    }
}

/// A request for the engine.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt: Vec<u32>,
    pub plan: SharingPlan,
    pub params: GenerationParams,
    /// What the output must match (structured outputs); `None`: free text.
    pub constraint: Option<RequestConstraint>,
}

/// Log-probability of a generated token and its top alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// Token counts of a finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose K/V came from the prefix cache.
    pub cached_tokens: usize,
}

/// What the engine streams back for a request, in order: tokens and choice ends, then `Done`.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    Token {
        index: usize,
        token: u32,
        /// Text that became final with this token (may be empty: a split character, or text
        /// held back because it may start a stop string).
        text: String,
        logprobs: Option<TokenLogprobs>,
    },
    Finished {
        index: usize,
        reason: FinishReason,
        /// Text held back until the end (never part of a stop string).
        text: String,
        /// The stop string that ended the choice, if one did.
        stop_sequence: Option<String>,
    },
    Done {
        usage: Usage,
    },
    Error(Failure),
}

/// Whose fault a failed request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCause {
    /// The model or the engine: a server error.
    Engine,
    /// The request's own output constraint could not go on (it exceeded its limits while
    /// generating): the client's.
    Constraint,
}

/// Why a request ended before it finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub cause: FailureCause,
    pub message: String,
}

impl Failure {
    pub fn engine(message: impl Into<String>) -> Self {
        Self {
            cause: FailureCause::Engine,
            message: message.into(),
        }
    }

    pub fn constraint(message: impl Into<String>) -> Self {
        Self {
            cause: FailureCause::Constraint,
            message: message.into(),
        }
    }
}
