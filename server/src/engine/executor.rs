//! Runs a step: one batched forward over the scheduled rows, then sampling. A forward that fails
//! is retried row by row (the forward changes no cache when it fails), so only the sequences
//! that cause an error fail and the others still advance.

use std::sync::Arc;

use epas_model::Sampler;
use epas_model::{Logits, SequenceStep};

use super::model::StepModel;
use super::scheduler::{BatchRow, RowOutput};

pub(crate) struct Executor {
    model: Arc<dyn StepModel>,
}

impl Executor {
    pub fn new(model: Arc<dyn StepModel>) -> Self {
        Self { model }
    }

    pub fn execute(&self, rows: &mut [BatchRow<'_>]) -> Vec<RowOutput> {
        match self.forward(rows) {
            Ok(logits) => sample(rows, logits),
            Err(error) if rows.len() == 1 => vec![RowOutput::Failed(error.to_string())],
            Err(error) => {
                tracing::warn!(%error, rows = rows.len(), "step failed; retrying each sequence alone");
                rows.iter_mut()
                    .flat_map(|row| {
                        let alone = std::slice::from_mut(row);
                        match self.forward(alone) {
                            Ok(logits) => sample(alone, logits),
                            Err(error) => {
                                tracing::error!(%error, "sequence failed");
                                vec![RowOutput::Failed(error.to_string())]
                            }
                        }
                    })
                    .collect()
            }
        }
    }

    fn forward(&self, rows: &mut [BatchRow<'_>]) -> epas_model::Result<Vec<Option<Vec<f32>>>> {
        let mut steps: Vec<SequenceStep<'_>> = rows
            .iter_mut()
            .map(|row| SequenceStep {
                tokens: row.tokens,
                cache: &mut *row.cache,
                logits: match (&row.sample, row.draft.is_empty()) {
                    (None, _) => Logits::Skip,
                    (Some(_), true) => Logits::Last,
                    (Some(_), false) => Logits::All,
                },
            })
            .collect();
        self.model.forward(&mut steps)
    }
}

fn sample(rows: &mut [BatchRow<'_>], logits: Vec<Option<Vec<f32>>>) -> Vec<RowOutput> {
    if logits.len() != rows.len() {
        let message = format!(
            "the model returned {} outputs for {} rows",
            logits.len(),
            rows.len()
        );
        return vec![RowOutput::Failed(message); rows.len()];
    }
    rows.iter_mut()
        .zip(logits)
        .map(|(row, logits)| match (row.sample.as_mut(), logits) {
            (None, _) => RowOutput::Computed,
            (Some(_), None) => RowOutput::Failed("the model returned no logits".into()),
            (Some((sampler, banned)), Some(logits)) if row.draft.is_empty() => {
                RowOutput::Sampled(sampler.sample_full(&logits, banned))
            }
            (Some((sampler, banned)), Some(logits)) => verify(sampler, banned, row.draft, &logits),
        })
        .collect()
}

/// Checks a draft against the logits of the pending position and of each drafted one: drafted
/// tokens are kept while the sampler keeps them, and the first position that differs (or the
/// one after the last draft) gives the model's own token.
fn verify(sampler: &mut Sampler, banned: &[u32], draft: &[u32], logits: &[f32]) -> RowOutput {
    let positions = draft.len() + 1;
    if logits.is_empty() || !logits.len().is_multiple_of(positions) {
        return RowOutput::Failed("the model returned logits of the wrong shape".into());
    }
    let vocab = logits.len() / positions;
    let mut tokens = Vec::with_capacity(positions);
    let mut accepted = 0;
    for (i, row) in logits.chunks_exact(vocab).enumerate() {
        let Some(&guess) = draft.get(i) else {
            tokens.push(sampler.sample_full(row, banned));
            break;
        };
        let (sampled, kept) = sampler.verify(row, banned, guess);
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
