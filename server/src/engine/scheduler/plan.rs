//! One engine step as plain data: what the scheduler decided ([`StepPlan`]) and what running it
//! gave ([`RowOutput`]).

use std::ops::Range;

use epas_model::{Logits, PagedSequence, Sampled, Sampler};
use llguidance::Matcher;

use super::sequence::SeqId;
use crate::engine::observer::StepPhase;
use crate::engine::request::Failure;

/// Work for one running sequence in a step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScheduledRow {
    pub seq: SeqId,
    /// Position of the sequence in the running list when the plan was made.
    pub(super) slot: usize,
    /// Positions of the sequence's tokens to run through the model.
    pub tokens: Range<usize>,
    /// Whether the step ends the sequence's pending tokens, so a token is sampled.
    pub sample: bool,
    /// Tokens the sampler may not pick this step.
    pub banned: Vec<u32>,
    /// Whether the rows are prompt positions (prefill) rather than a generated token (decode).
    pub prefill: bool,
    /// Drafted tokens checked after the pending one (speculative decoding); empty: none.
    pub draft: Vec<u32>,
    /// The pending token followed by the draft, when there is a draft.
    pub(super) input: Vec<u32>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct StepPlan {
    pub rows: Vec<ScheduledRow>,
}

impl StepPlan {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Tokens the step runs through the model.
    pub fn tokens(&self) -> usize {
        self.rows
            .iter()
            .map(|r| r.tokens.len() + r.draft.len())
            .sum()
    }

    pub fn phase(&self) -> StepPhase {
        let prefill = self.rows.iter().any(|r| r.prefill);
        let decode = self.rows.iter().any(|r| !r.prefill);
        match (prefill, decode) {
            (true, true) => StepPhase::Mixed,
            (true, false) => StepPhase::Prefill,
            _ => StepPhase::Decode,
        }
    }
}

/// A scheduled row's view of its sequence, for the executor.
pub(crate) struct BatchRow<'a> {
    pub input: RowInput<'a>,
    /// How the next token is chosen, when the row samples.
    pub sample: Option<RowSampling<'a>>,
}

/// What the forward reads and writes for a row.
pub(crate) struct RowInput<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut PagedSequence,
    /// The drafted tokens at the end of `tokens`, to verify.
    pub draft: &'a [u32],
    /// None (a prefill chunk), the last position's, or every position's (a draft to verify).
    pub logits: Logits,
}

/// What picks a row's next token.
pub(crate) struct RowSampling<'a> {
    pub sampler: &'a mut Sampler,
    /// Tokens it may not pick.
    pub banned: &'a [u32],
    /// The output constraint, advanced by the picked token.
    pub constraint: Option<&'a mut Matcher>,
}

/// What running one row gave.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RowOutput {
    /// The tokens are in the cache; nothing was sampled (a prefill chunk that is not the last).
    Computed,
    Sampled(Sampled),
    /// A checked draft: the tokens this step gives, in order (the kept draft tokens and the
    /// model's own after them), and how many of `drafted` were kept.
    Speculated {
        tokens: Vec<Sampled>,
        drafted: usize,
        accepted: usize,
    },
    /// The forward failed for this sequence; its cache is unchanged.
    Failed(Failure),
}
