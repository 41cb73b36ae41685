//! What `epas eval` measures when its flags are left out, chosen so that every checkpoint can be
//! evaluated: only the ratios it serves, a window that fits its context.

use epas_model::ModelInfo;

/// Ratios evaluated without `--ratios`, where the model serves them.
const DEFAULT_RATIOS: [f64; 3] = [0.0, 0.25, 0.5];
/// Window length without `--ctx`, where the model's context allows it.
const DEFAULT_WINDOW: usize = 512;
/// Fewer scored tokens than this give a perplexity too noisy to compare ratios by.
pub(crate) const FEW_SCORED_TOKENS: usize = 300;

/// The default ratios this model serves (0 always), and the note to print when some were left out.
pub(crate) fn default_ratios(
    info: &ModelInfo,
    allow_untrained_sharing: bool,
) -> (Vec<f64>, Option<String>) {
    let (served, refused): (Vec<f64>, Vec<f64>) = DEFAULT_RATIOS
        .iter()
        .partition(|&&r| info.plan(r, allow_untrained_sharing).is_ok());
    let note = (!refused.is_empty()).then(|| {
        let max = info.max_sharing_ratio(allow_untrained_sharing);
        let hint = if allow_untrained_sharing {
            ""
        } else {
            " (--allow-untrained-sharing forces sharing; quality drops)"
        };
        format!(
            "note: evaluating ratios {} only: {} are above this model's maximum {max}{hint}",
            join(&served),
            join(&refused)
        )
    });
    (served, note)
}

/// The default window: [`DEFAULT_WINDOW`] tokens, or the model's whole context when shorter.
pub(crate) fn default_window(context: usize) -> usize {
    DEFAULT_WINDOW.min(context)
}

fn join(ratios: &[f64]) -> String {
    ratios
        .iter()
        .map(f64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
