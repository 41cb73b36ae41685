//! Runs a step: one batched forward over the scheduled rows, then sampling. A forward that fails
//! is retried row by row (the forward changes no cache when it fails), so only the sequences
//! that cause an error fail and the others still advance. A constrained row's token is checked
//! against its constraint after sampling; the rows whose samplers need the whole token mask
//! first (top-k, top-p, min-p) have it computed on another thread while the forward runs.

use std::sync::Arc;

use epas_model::{Sampler, SequenceStep};
use llguidance::toktrie::SimpleVob;
use llguidance::Matcher;

use super::model::StepModel;
use super::request::Failure;
use super::scheduler::{BatchRow, RowInput, RowOutput, RowSampling};
use super::structured::MatcherFilter;

pub(crate) struct Executor {
    model: Arc<dyn StepModel>,
}

/// A constrained row's mask: which tokens its constraint allows next.
type Mask = Option<Result<SimpleVob, String>>;

impl Executor {
    pub fn new(model: Arc<dyn StepModel>) -> Self {
        Self { model }
    }

    pub fn execute(&self, rows: &mut [BatchRow<'_>]) -> Vec<RowOutput> {
        let (mut inputs, mut samplings): (Vec<_>, Vec<_>) = rows
            .iter_mut()
            .map(|row| (&mut row.input, &mut row.sample))
            .unzip();
        let (forward, mut masks) = if samplings.iter().any(|s| needs_mask_first(s)) {
            std::thread::scope(|scope| {
                let masks = scope.spawn(|| compute_masks(&mut samplings));
                let forward = self.forward(&mut inputs);
                let masks = masks
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (forward, masks)
            })
        } else {
            (self.forward(&mut inputs), Vec::new())
        };
        match forward {
            Ok(logits) => sample_rows(&mut inputs, &mut samplings, logits, &mut masks),
            Err(error) if inputs.len() == 1 => {
                vec![RowOutput::Failed(Failure::engine(error.to_string()))]
            }
            Err(error) => {
                tracing::warn!(%error, rows = inputs.len(), "step failed; retrying each sequence alone");
                (0..inputs.len())
                    .flat_map(|i| {
                        let input = std::slice::from_mut(&mut inputs[i]);
                        match self.forward(input) {
                            Ok(logits) => sample_rows(
                                input,
                                std::slice::from_mut(&mut samplings[i]),
                                logits,
                                masks.get_mut(i..=i).unwrap_or_default(),
                            ),
                            Err(error) => {
                                tracing::error!(%error, "sequence failed");
                                vec![RowOutput::Failed(Failure::engine(error.to_string()))]
                            }
                        }
                    })
                    .collect()
            }
        }
    }

    fn forward(
        &self,
        inputs: &mut [&mut RowInput<'_>],
    ) -> epas_model::Result<Vec<Option<Vec<f32>>>> {
        let mut steps: Vec<SequenceStep<'_>> = inputs
            .iter_mut()
            .map(|input| SequenceStep {
                tokens: input.tokens,
                logits: input.logits,
                cache: &mut *input.cache,
            })
            .collect();
        self.model.forward(&mut steps)
    }
}

/// Whether a row samples under a constraint with a sampler that must mask before drawing.
fn needs_mask_first(s: &Option<RowSampling<'_>>) -> bool {
    s.as_ref()
        .is_some_and(|s| s.constraint.is_some() && !s.sampler.checks_after_drawing())
}

/// The masks of the rows that need them first (`None` for the others).
fn compute_masks(samplings: &mut [&mut Option<RowSampling<'_>>]) -> Vec<Mask> {
    samplings
        .iter_mut()
        .map(|s| {
            if !needs_mask_first(s) {
                return None;
            }
            let matcher = s.as_mut()?.constraint.as_mut()?;
            Some(matcher.compute_mask().map_err(|e| e.to_string()))
        })
        .collect()
}

/// Samples rows from their logits; `masks` holds the masks computed beside the forward, or
/// nothing when no row needed one.
fn sample_rows(
    inputs: &mut [&mut RowInput<'_>],
    samplings: &mut [&mut Option<RowSampling<'_>>],
    logits: Vec<Option<Vec<f32>>>,
    masks: &mut [Mask],
) -> Vec<RowOutput> {
    if logits.len() != inputs.len() {
        let message = format!(
            "the model returned {} outputs for {} rows",
            logits.len(),
            inputs.len()
        );
        return vec![RowOutput::Failed(Failure::engine(message)); inputs.len()];
    }
    inputs
        .iter()
        .zip(samplings.iter_mut())
        .zip(logits)
        .enumerate()
        .map(
            |(i, ((input, sampling), logits))| match (sampling.as_mut(), logits) {
                (None, _) => RowOutput::Computed,
                (Some(_), None) => {
                    RowOutput::Failed(Failure::engine("the model returned no logits"))
                }
                (Some(s), Some(logits)) if input.draft.is_empty() => {
                    sample_one(s, &logits, masks.get_mut(i).and_then(Option::take))
                }
                (Some(s), Some(logits)) => verify(s.sampler, s.banned, input.draft, &logits),
            },
        )
        .collect()
}

/// Picks a row's next token, one its constraint allows when it has one, and advances the
/// constraint with it.
fn sample_one(s: &mut RowSampling<'_>, logits: &[f32], mask: Mask) -> RowOutput {
    let Some(matcher) = s.constraint.as_deref_mut() else {
        return RowOutput::Sampled(s.sampler.sample_full(logits, s.banned));
    };
    let mask = match mask.transpose() {
        Ok(mask) => mask,
        Err(e) => return could_not_go_on(e),
    };
    let sampled = {
        let mut filter = MatcherFilter::new(matcher, mask);
        match s.sampler.sample_filtered(logits, s.banned, &mut filter) {
            Ok(sampled) => sampled,
            Err(e) => return could_not_go_on(e),
        }
    };
    match advance(matcher, sampled.token) {
        Ok(()) => RowOutput::Sampled(sampled),
        Err(e) => RowOutput::Failed(Failure::constraint(e)),
    }
}

fn could_not_go_on(e: String) -> RowOutput {
    RowOutput::Failed(Failure::constraint(format!(
        "the output constraint could not go on: {e}"
    )))
}

fn advance(matcher: &mut Matcher, token: u32) -> Result<(), String> {
    matcher
        .consume_token(token)
        .map_err(|e| format!("the output constraint could not take the sampled token: {e}"))
}

/// Checks a draft against the logits of the pending position and of each drafted one: each
/// position samples as it would without drafts, and drafted tokens are kept while the sampled
/// token equals them. A draft token is thus kept with exactly its probability, and a seeded
/// request draws the same random numbers, so gives the same text, with drafts or without.
fn verify(sampler: &mut Sampler, banned: &[u32], draft: &[u32], logits: &[f32]) -> RowOutput {
    let positions = draft.len() + 1;
    if logits.is_empty() || !logits.len().is_multiple_of(positions) {
        return RowOutput::Failed(Failure::engine(
            "the model returned logits of the wrong shape",
        ));
    }
    let vocab = logits.len() / positions;
    let mut tokens = Vec::with_capacity(positions);
    let mut accepted = 0;
    for (i, row) in logits.chunks_exact(vocab).enumerate() {
        let sampled = sampler.sample_full(row, banned);
        let kept = draft.get(i) == Some(&sampled.token);
        tokens.push(sampled);
        if !kept {
            break;
        }
        accepted += 1;
    }
    RowOutput::Speculated {
        tokens,
        drafted: draft.len(),
        accepted,
    }
}
