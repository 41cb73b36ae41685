//! Everything a run needs before its first step: output folder, tokenizer, initial weights, data.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::bpe::{document_separator, train_bpe, CHATML_TEMPLATE};
use crate::checkpoint::CHECKPOINT_DIR;
use crate::data::{read_corpus, token_stream, Dataset};
use crate::error::{TrainError, TrainResult};
use crate::options::{Architecture, TrainOptions};
use crate::params::TrainParams;
use epas_model::RopeScaling;
use epas_model::TextTokenizer;
use epas_model::{EpasMeta, LlamaConfig, ModelInfo};

/// What a saved run needs to rebuild its tokenizer around `tokenizer.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerMeta {
    pub bos: Option<u32>,
    pub eos: Vec<u32>,
    pub add_bos: bool,
    pub chat_template: Option<String>,
}

impl TokenizerMeta {
    pub fn of(t: &TextTokenizer) -> Self {
        Self {
            bos: t.bos_token,
            eos: t.eos_tokens.clone(),
            add_bos: t.add_bos,
            chat_template: t.chat_template.clone(),
        }
    }

    pub fn load(&self, path: &Path) -> TrainResult<TextTokenizer> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| TrainError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(TextTokenizer::new(
            inner,
            self.bos,
            self.eos.clone(),
            self.add_bos,
            self.chat_template.clone(),
        ))
    }
}

/// Refuses an output folder that already holds a run (checked before any work is done).
pub fn refuse_existing_run(out: &Path) -> TrainResult<()> {
    if out.join(CHECKPOINT_DIR).exists() {
        return Err(TrainError::Options(format!(
            "{} already holds a training run: pass --resume to continue it, or choose another --out",
            out.display()
        )));
    }
    Ok(())
}

/// Creates `out` and proves it is writable.
pub fn prepare_output(out: &Path) -> TrainResult<()> {
    refuse_existing_run(out)?;
    std::fs::create_dir_all(out).map_err(TrainError::io(out))?;
    let probe = out.join(".write-probe");
    std::fs::write(&probe, b"").map_err(TrainError::io(out))?;
    std::fs::remove_file(&probe).map_err(TrainError::io(&probe))
}

/// A tokenizer.json given by the user, with the usual end-of-text tokens as EOS.
fn tokenizer_from_file(path: &Path) -> TrainResult<TextTokenizer> {
    let inner = tokenizers::Tokenizer::from_file(path)
        .map_err(|e| TrainError::Tokenizer(format!("{}: {e}", path.display())))?;
    let eos: Vec<u32> = ["<|endoftext|>", "<|im_end|>", "</s>", "<|eot_id|>"]
        .iter()
        .filter_map(|t| inner.token_to_id(t))
        .collect();
    let chat = inner.token_to_id("<|im_start|>").is_some();
    Ok(TextTokenizer::new(
        inner,
        None,
        eos,
        false,
        chat.then(|| CHATML_TEMPLATE.to_string()),
    ))
}

fn config_for(arch: &Architecture, vocab: usize, seq_len: usize) -> LlamaConfig {
    LlamaConfig {
        vocab_size: vocab,
        hidden_size: arch.hidden,
        intermediate_size: arch.ffn,
        num_layers: arch.layers,
        num_heads: arch.heads,
        num_kv_heads: arch.kv_heads,
        rope_theta: arch.rope_theta,
        rms_norm_eps: 1e-5,
        max_position_embeddings: if arch.context > 0 {
            arch.context
        } else {
            seq_len
        },
        tie_word_embeddings: true,
        rope_scaling: RopeScaling::None,
    }
}

/// The model and tokenizer a fresh run starts from.
pub struct Start {
    pub params: TrainParams,
    pub tokenizer: TextTokenizer,
    pub info: ModelInfo,
}

/// Loads `--init` (continual pretraining) or builds a new model (from scratch).
pub fn initial_model(
    opts: &TrainOptions,
    arch_given: bool,
    docs: &[crate::data::Document],
) -> TrainResult<Start> {
    if let Some(init) = &opts.init {
        let (model, tokenizer) = epas_model::load_model(init, &Device::Cpu)?;
        let c = model.config();
        // The run is saved as HF folders: refuse now a scaling they cannot describe.
        epas_model::hf_rope_scaling(&c.rope_scaling)?;
        if arch_given {
            let a = &opts.arch;
            let theirs = (
                c.num_layers,
                c.hidden_size,
                c.num_heads,
                c.num_kv_heads,
                c.intermediate_size,
            );
            let ours = (a.layers, a.hidden, a.heads, a.kv_heads, a.ffn);
            if theirs != ours {
                return Err(TrainError::IncompatibleInit(format!(
                    "{} has (layers, hidden, heads, kv-heads, ffn) = {theirs:?}, the flags ask for {ours:?}",
                    init.display()
                )));
            }
        }
        if opts.tokenizer.is_some() {
            return Err(TrainError::IncompatibleInit(
                "--tokenizer cannot replace the tokenizer of an --init checkpoint".into(),
            ));
        }
        let mut info = model.info.clone();
        info.name = opts
            .out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| info.name.clone());
        let params = TrainParams::from_model(&model)?;
        return Ok(Start {
            params,
            tokenizer,
            info,
        });
    }
    let tokenizer = match &opts.tokenizer {
        Some(path) => tokenizer_from_file(path)?,
        None => train_bpe(docs, opts.vocab_size)?,
    };
    let vocab = tokenizer.inner().get_vocab_size(true);
    let config = config_for(&opts.arch, vocab, opts.seq_len);
    let model = epas_model::random_model(config, None, opts.seed)?;
    let info = ModelInfo {
        name: opts
            .out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "epas".into()),
        ..model.info.clone()
    };
    Ok(Start {
        params: TrainParams::from_model(&model)?,
        tokenizer,
        info,
    })
}

/// Tokenized training and validation windows.
pub fn load_data(
    opts: &TrainOptions,
    docs: &[crate::data::Document],
    tokenizer: &TextTokenizer,
    vocab: usize,
) -> TrainResult<Dataset> {
    let sep = document_separator(tokenizer)?;
    let stream = token_stream(docs, tokenizer, sep)?;
    if let Some(&bad) = stream.iter().find(|&&t| t as usize >= vocab) {
        return Err(TrainError::Tokenizer(format!(
            "token id {bad} is outside the model's vocabulary of {vocab}"
        )));
    }
    let validation = match &opts.val_data {
        Some(p) => Some(token_stream(
            &read_corpus(std::slice::from_ref(p))?,
            tokenizer,
            sep,
        )?),
        None => None,
    };
    Dataset::split(stream, opts.seq_len, opts.val_fraction, validation)
}

/// EPAS metadata for a model with `sharing_layers` of `num_layers` trained to share.
/// The ratio is the run's target once the whole target set shares (`floor(target * L)` layers),
/// otherwise the fraction reached so far.
pub fn epas_meta(
    num_layers: usize,
    sharing_layers: usize,
    target: (f64, usize),
    schedule: serde_json::Value,
) -> Option<EpasMeta> {
    let (target_ratio, target_layers) = target;
    (sharing_layers > 0).then(|| EpasMeta {
        sharing_ratio: if sharing_layers == target_layers {
            target_ratio
        } else {
            sharing_layers as f64 / num_layers as f64
        },
        sharing_layers,
        schedule: Some(schedule),
    })
}

pub fn data_names(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}
