//! Training checkpoints: weights, optimizer moments, step, data position and the options of the
//! run, written as one folder that replaces the previous checkpoint atomically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{TrainError, TrainResult};
use crate::log::StepRecord;
use crate::optimizer::{AdamW, AdamWConfig};
use crate::options::TrainOptions;
use crate::params::TrainParams;

pub const CHECKPOINT_DIR: &str = "checkpoint";
const STATE_FILE: &str = "state.json";
const WEIGHTS_FILE: &str = "weights.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const TOKENIZER_FILE: &str = "tokenizer.json";

/// Everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub format_version: u32,
    /// Steps completed.
    pub step: usize,
    /// Training tokens consumed.
    pub tokens: u64,
    /// The data order is a function of the seed and the number of windows drawn so far.
    pub seed: u64,
    pub samples_drawn: usize,
    /// Train windows in the data the run started with (checked on resume).
    pub train_windows: usize,
    pub options: TrainOptions,
    pub model_config: epas_model::LlamaConfig,
    pub model_name: String,
    pub tokenizer: crate::setup::TokenizerMeta,
    pub adamw: AdamWConfig,
    pub optimizer_steps: HashMap<String, u64>,
    pub log: Vec<StepRecord>,
    pub elapsed_s: f64,
}

/// A checkpoint read back from disk.
pub struct Checkpoint {
    pub state: TrainState,
    pub weights: HashMap<String, Tensor>,
    pub optimizer: HashMap<String, Tensor>,
    pub tokenizer_path: PathBuf,
}

fn ckpt_err(path: &Path, message: impl ToString) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Writes the checkpoint of `out` (replacing the previous one only once the new one is whole).
pub fn save(
    out: &Path,
    state: &TrainState,
    params: &TrainParams,
    optimizer: &AdamW,
    tokenizer: &epas_model::TextTokenizer,
) -> TrainResult<()> {
    let dir = out.join(CHECKPOINT_DIR);
    let tmp = out.join(format!(".{CHECKPOINT_DIR}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(TrainError::io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(TrainError::io(&tmp))?;
    let weights: HashMap<String, Tensor> = params
        .named()
        .into_iter()
        .map(|p| (p.name, p.var.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&weights, tmp.join(WEIGHTS_FILE))?;
    let (moments, _) = optimizer.state();
    candle_core::safetensors::save(&moments, tmp.join(OPTIMIZER_FILE))?;
    tokenizer
        .inner()
        .save(tmp.join(TOKENIZER_FILE), false)
        .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    let text = serde_json::to_string_pretty(state).map_err(|e| ckpt_err(&tmp, e))?;
    let state_path = tmp.join(STATE_FILE);
    std::fs::write(&state_path, text).map_err(TrainError::io(&state_path))?;

    let old = out.join(format!(".{CHECKPOINT_DIR}.old"));
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(TrainError::io(&old))?;
    }
    if dir.exists() {
        std::fs::rename(&dir, &old).map_err(TrainError::io(&dir))?;
    }
    std::fs::rename(&tmp, &dir).map_err(TrainError::io(&dir))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(TrainError::io(&old))?;
    }
    Ok(())
}

/// Reads the checkpoint of `out`.
pub fn load(out: &Path) -> TrainResult<Checkpoint> {
    let dir = out.join(CHECKPOINT_DIR);
    let state_path = dir.join(STATE_FILE);
    if !state_path.exists() {
        return Err(ckpt_err(
            &dir,
            "no checkpoint to resume from (run without --resume first)",
        ));
    }
    let text = std::fs::read_to_string(&state_path).map_err(TrainError::io(&state_path))?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| ckpt_err(&state_path, e))?;
    let read = |name: &str| -> TrainResult<HashMap<String, Tensor>> {
        let p = dir.join(name);
        candle_core::safetensors::load(&p, &Device::Cpu).map_err(|e| ckpt_err(&p, e))
    };
    Ok(Checkpoint {
        weights: read(WEIGHTS_FILE)?,
        optimizer: read(OPTIMIZER_FILE)?,
        tokenizer_path: dir.join(TOKENIZER_FILE),
        state,
    })
}
