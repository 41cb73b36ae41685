//! Options of a training run (what `epas train` flags set), saved with every checkpoint.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::device::TrainDevice;
use crate::error::{TrainError, TrainResult};

/// The multi-block layout runs are started with now: groups separated by their own computing
/// sources (the earlier layout, 1, trained the single-block model).
pub const MULTI_BLOCK_LAYOUT: u8 = 2;

/// Shape of a model trained from scratch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub rope_theta: f32,
    /// Context the model serves (defaults to the training sequence length).
    pub context: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub data: Vec<PathBuf>,
    /// Separate validation text; without it a fraction of the training windows is held out.
    pub val_data: Option<PathBuf>,
    pub val_fraction: f64,
    pub out: PathBuf,
    /// Continual pretraining from this checkpoint (GGUF, or an HF folder).
    pub init: Option<PathBuf>,
    /// An existing tokenizer.json; otherwise a BPE of `vocab_size` is trained on the data.
    pub tokenizer: Option<PathBuf>,
    pub vocab_size: usize,
    pub arch: Architecture,
    pub steps: usize,
    pub seq_len: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub lr: f64,
    pub min_lr_ratio: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub sharing_ratio: f64,
    pub interval: usize,
    pub block: usize,
    pub no_epas: bool,
    pub multi_block: bool,
    /// Flexible-ratio training (see `ProgressiveSchedule::flexible_depth`).
    #[serde(default)]
    pub flexible: bool,
    /// The multi-block layout the run started with (absent in checkpoints of the earlier one).
    #[serde(default)]
    pub multi_block_layout: u8,
    pub seed: u64,
    pub eval_every: usize,
    pub eval_batches: usize,
    pub save_every: usize,
    pub log_every: usize,
    /// Stop (with a checkpoint) after this step although the schedule runs to `steps`.
    #[serde(skip)]
    pub stop_after: Option<usize>,
    /// Where the run computes; not saved: a run may resume on another device.
    #[serde(skip)]
    pub device: TrainDevice,
}

impl TrainOptions {
    /// Options with the defaults of `epas train` for the given data, output and length.
    pub fn new(data: Vec<PathBuf>, out: PathBuf, steps: usize) -> Self {
        Self {
            data,
            val_data: None,
            val_fraction: 0.05,
            out,
            init: None,
            tokenizer: None,
            vocab_size: 4096,
            arch: Architecture {
                layers: 8,
                hidden: 256,
                heads: 4,
                kv_heads: 2,
                ffn: 704,
                rope_theta: 10000.0,
                context: 0,
            },
            steps,
            seq_len: 256,
            batch_size: 16,
            grad_accum: 1,
            lr: 1e-3,
            min_lr_ratio: 0.1,
            warmup: 0,
            weight_decay: 0.1,
            grad_clip: 1.0,
            sharing_ratio: 0.5,
            interval: 0,
            block: 1,
            no_epas: false,
            multi_block: false,
            flexible: false,
            multi_block_layout: MULTI_BLOCK_LAYOUT,
            seed: 0,
            eval_every: 0,
            eval_batches: 8,
            save_every: 0,
            log_every: 10,
            stop_after: None,
            device: TrainDevice::default(),
        }
    }

    /// Checks what can be checked before reading any data.
    pub fn validate(&self) -> TrainResult<()> {
        let bad = |m: String| Err(TrainError::Options(m));
        for (name, v) in [
            ("--steps", self.steps),
            ("--batch-size", self.batch_size),
            ("--grad-accum", self.grad_accum),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if self.seq_len < 2 {
            return bad(format!(
                "--seq-len must be at least 2 (got {})",
                self.seq_len
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr must be a positive number (got {})", self.lr));
        }
        if !(self.sharing_ratio.is_finite() && (0.0..1.0).contains(&self.sharing_ratio)) {
            return bad(format!(
                "--sharing-ratio must be in [0, 1) (got {})",
                self.sharing_ratio
            ));
        }
        if self.no_epas && (self.flexible || self.multi_block) {
            return bad(format!(
                "--{} trains a sharing schedule; --no-epas has none",
                if self.flexible {
                    "flexible"
                } else {
                    "multi-block"
                }
            ));
        }
        if self.warmup >= self.steps {
            return bad(format!(
                "--warmup {} must be below --steps {}",
                self.warmup, self.steps
            ));
        }
        if let Some(s) = self.stop_after {
            if s == 0 || s > self.steps {
                return bad(format!("--stop-after must be in 1..={}", self.steps));
            }
        }
        Ok(())
    }

    /// The interval of the schedule: as given, or chosen so the full target is reached at 60%
    /// of the run at the latest, within EPAS.md's bound `I <= T / (k/B + 1)`.
    pub fn interval_for(&self, target_layers: usize) -> usize {
        if self.interval > 0 {
            return self.interval;
        }
        let growths = (target_layers / self.block.max(1)).max(1);
        (self.steps * 3 / 5 / growths)
            .min(self.steps / (growths + 1))
            .max(1)
    }

    pub fn eval_every(&self) -> usize {
        if self.eval_every > 0 {
            self.eval_every
        } else {
            (self.steps / 20).max(1)
        }
    }

    pub fn save_every(&self) -> usize {
        if self.save_every > 0 {
            self.save_every
        } else {
            (self.steps / 10).max(1)
        }
    }

    pub fn tokens_per_step(&self) -> usize {
        self.batch_size * self.grad_accum * self.seq_len
    }
}
