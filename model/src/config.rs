//! Model shape and EPAS training metadata, independent of the file format they came from.

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::rope_scaling::RopeScaling;
use crate::sharing::SharingPlan;

/// The shape of a LLaMA decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub rope_theta: f32,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Long-context frequency scaling (Llama 3.x); absent in checkpoints of runs before it.
    #[serde(default, skip_serializing_if = "RopeScaling::is_none")]
    pub rope_scaling: RopeScaling,
}

impl LlamaConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Width of one K (or V) row: `num_kv_heads * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim()
    }

    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(ModelError::Config(m));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return err(format!("{name} must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return err(format!(
                "hidden_size {} is not a multiple of num_heads {}",
                self.hidden_size, self.num_heads
            ));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return err(format!(
                "num_heads {} is not a multiple of num_kv_heads {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return err(format!(
                "head_dim {} must be even for RoPE",
                self.head_dim()
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return err(format!("rope_theta {} must be positive", self.rope_theta));
        }
        if let Some(problem) = self.rope_scaling.problem(self.head_dim()) {
            return err(problem);
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return err(format!(
                "rms_norm_eps {} must be positive",
                self.rms_norm_eps
            ));
        }
        Ok(())
    }
}

/// What EPAS training did to a checkpoint. Absent on ordinary models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpasMeta {
    /// The sharing ratio the model was trained for (the maximum it serves by default).
    pub sharing_ratio: f64,
    /// Number of sharing layers reached in training, `floor(sharing_ratio * L)`.
    pub sharing_layers: usize,
    /// The schedule and data used, free-form (interval, block, steps, tokens...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<serde_json::Value>,
}

impl EpasMeta {
    /// Refuses, by name, a sharing layout that [`SharingPlan`] cannot serve: the multi-block
    /// ablation's groups, each sharing from a source of its own.
    pub(crate) fn check_servable(&self) -> Result<()> {
        let method = self
            .schedule
            .as_ref()
            .and_then(|s| s.get("method"))
            .and_then(serde_json::Value::as_str);
        if method == Some("epas-multi-block") {
            return Err(ModelError::Config(
                "this checkpoint was trained with multi-block sharing (`epas train \
                 --multi-block`: groups of sharing layers, each with its own source), which \
                 this server cannot serve; it serves one contiguous block of the deepest layers"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Shape plus EPAS metadata: everything a caller needs to know about a loaded model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub config: LlamaConfig,
    pub epas: Option<EpasMeta>,
    /// Storage of the linear weights, e.g. "q4_1" or "f32".
    pub weight_format: String,
}

impl ModelInfo {
    /// Highest ratio a request may ask for. An ordinary model serves only ratio 0 unless the
    /// operator allows untrained ("forced") sharing, which degrades quality.
    pub fn max_sharing_ratio(&self, allow_untrained_sharing: bool) -> f64 {
        let structural = SharingPlan::max_ratio_for(self.config.num_layers);
        match (&self.epas, allow_untrained_sharing) {
            (_, true) => structural,
            (Some(meta), false) => meta.sharing_ratio.min(structural),
            (None, false) => 0.0,
        }
    }

    /// The plan for `ratio`, refused when it is above `max_sharing_ratio` as stated (0.6 on a
    /// model trained to 0.5 is refused, though it selects as many layers), or when it makes more
    /// layers share than were trained to (or any when none were), unless untrained sharing is
    /// allowed. Every refusal names that one maximum.
    pub fn plan(&self, ratio: f64, allow_untrained_sharing: bool) -> Result<SharingPlan> {
        let max = self.max_sharing_ratio(allow_untrained_sharing);
        let trained_layers = match (&self.epas, allow_untrained_sharing) {
            (_, true) => self.config.num_layers.saturating_sub(1),
            (Some(meta), false) => meta.sharing_layers,
            (None, false) => 0,
        };
        // Infinite, NaN and negative ratios fall through to `SharingPlan::new`, which names their
        // problem.
        if ratio.is_finite() && ratio > max + 1e-12 {
            return Err(self.above_max(ratio, max, allow_untrained_sharing));
        }
        let plan = SharingPlan::new(self.config.num_layers, ratio)?;
        // A checkpoint whose stored ratio selects more layers than its metadata says were trained.
        if plan.sharing_layers() > trained_layers {
            return Err(self.above_max(ratio, max, allow_untrained_sharing));
        }
        Ok(plan)
    }

    fn above_max(&self, ratio: f64, max: f64, allow_untrained_sharing: bool) -> ModelError {
        let reason = if allow_untrained_sharing {
            "layer 0 never shares".to_string()
        } else if self.epas.is_none() {
            "the checkpoint has no EPAS training; pass --allow-untrained-sharing to force it"
                .to_string()
        } else {
            "the checkpoint was trained up to this ratio; pass --allow-untrained-sharing to go further"
                .to_string()
        };
        ModelError::RatioAboveMax { ratio, max, reason }
    }
}
