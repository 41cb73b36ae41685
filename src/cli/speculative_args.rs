//! Flags of speculative decoding, shared by `serve` and `bench-batch`.

use clap::{Args, ValueEnum};
use epas_server::engine::SpeculativeConfig;

/// How draft tokens are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SpeculativeMethod {
    /// Prompt lookup: the tokens that followed an earlier occurrence of the sequence's last
    /// n-gram (no draft model).
    Ngram,
}

#[derive(Debug, Clone, Args)]
pub struct SpeculativeArgs {
    /// Speculative decoding: `ngram` drafts tokens by prompt lookup and checks them in the same
    /// forward (greedy output unchanged, sampled output keeps its distribution). Off by default;
    /// a request can opt out with `"speculative": false`.
    #[arg(long, env = "EPAS_SPECULATIVE", value_enum)]
    pub speculative: Option<SpeculativeMethod>,
    /// Draft tokens checked per step, at most.
    #[arg(long, env = "EPAS_NUM_SPECULATIVE_TOKENS", default_value_t = 4)]
    pub num_speculative_tokens: usize,
    /// Shortest n-gram looked up.
    #[arg(long, env = "EPAS_NGRAM_MIN", default_value_t = 2)]
    pub ngram_min: usize,
    /// Longest n-gram looked up.
    #[arg(long, env = "EPAS_NGRAM_MAX", default_value_t = 4)]
    pub ngram_max: usize,
    /// No drafts while more sequences than this run (a large batch already uses the compute a
    /// draft would save).
    #[arg(long, env = "EPAS_SPECULATIVE_MAX_BATCH", default_value_t = 8)]
    pub speculative_max_batch: usize,
}

impl SpeculativeArgs {
    pub fn config(&self) -> anyhow::Result<Option<SpeculativeConfig>> {
        let Some(SpeculativeMethod::Ngram) = self.speculative else {
            return Ok(None);
        };
        let config = SpeculativeConfig {
            num_tokens: self.num_speculative_tokens,
            ngram_min: self.ngram_min,
            ngram_max: self.ngram_max,
            max_batch: self.speculative_max_batch,
        };
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(Some(config))
    }
}
