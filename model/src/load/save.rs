//! Writes a model as an HF folder (f32 safetensors, config.json with the `"epas"` object,
//! tokenizer.json), atomically: everything goes to a temporary folder that is renamed at the end.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;

use super::rope_hf::hf_rope_scaling;
use crate::error::{ModelError, Result};
use crate::model::EpasLlama;
use crate::tokenizer::TextTokenizer;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Saves `model` and `tokenizer` into `dir`, which must not exist yet or is replaced whole.
pub fn save_safetensors(model: &EpasLlama, tokenizer: &TextTokenizer, dir: &Path) -> Result<()> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dir
        .file_name()
        .ok_or_else(|| ModelError::Config(format!("{} is not a folder name", dir.display())))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let result = write_into(model, tokenizer, &tmp);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(io(dir))
}

/// Writes the model files (`model.safetensors`, `config.json`, `tokenizer.json`,
/// `tokenizer_config.json`) into the existing folder `dir`, next to whatever else it holds. Each
/// file is written under a temporary name first and renamed into place.
pub fn save_model_files(model: &EpasLlama, tokenizer: &TextTokenizer, dir: &Path) -> Result<()> {
    let tmp = dir.join(format!(".model.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let result = write_into(model, tokenizer, &tmp).and_then(|()| {
        for name in MODEL_FILES {
            let target = dir.join(name);
            std::fs::rename(tmp.join(name), &target).map_err(io(&target))?;
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

const MODEL_FILES: [&str; 4] = [
    "model.safetensors",
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
];

fn write_into(model: &EpasLlama, tokenizer: &TextTokenizer, dir: &Path) -> Result<()> {
    let c = model.config();
    let rope_scaling = hf_rope_scaling(&c.rope_scaling)?;
    let weights = model.host_weights()?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    tensors.insert(
        "model.embed_tokens.weight".into(),
        weights.embed.dequantized()?,
    );
    for (i, l) in weights.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        for (name, t) in [
            ("input_layernorm.weight", l.attn_norm.clone()),
            ("self_attn.q_proj.weight", l.wq.dequantized()?),
            ("self_attn.k_proj.weight", l.wk.dequantized()?),
            ("self_attn.v_proj.weight", l.wv.dequantized()?),
            ("self_attn.o_proj.weight", l.wo.dequantized()?),
            ("post_attention_layernorm.weight", l.mlp_norm.clone()),
            ("mlp.gate_proj.weight", l.gate.dequantized()?),
            ("mlp.up_proj.weight", l.up.dequantized()?),
            ("mlp.down_proj.weight", l.down.dequantized()?),
        ] {
            tensors.insert(format!("{p}.{name}"), t);
        }
    }
    tensors.insert("model.norm.weight".into(), weights.norm.clone());
    if !c.tie_word_embeddings {
        tensors.insert("lm_head.weight".into(), weights.lm_head.dequantized()?);
    }
    let weights = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &weights)?;

    let mut config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "vocab_size": c.vocab_size,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "max_position_embeddings": c.max_position_embeddings,
        "tie_word_embeddings": c.tie_word_embeddings,
        "bos_token_id": tokenizer.bos_token,
        "eos_token_id": tokenizer.eos_tokens,
        "torch_dtype": "float32",
    });
    if let Some(rope) = rope_scaling {
        config["rope_scaling"] = rope;
    }
    if let Some(epas) = &model.info.epas {
        config["epas"] =
            serde_json::to_value(epas).map_err(|e| ModelError::Config(e.to_string()))?;
    }
    let text =
        serde_json::to_string_pretty(&config).map_err(|e| ModelError::Config(e.to_string()))?;
    let path = dir.join("config.json");
    std::fs::write(&path, text).map_err(io(&path))?;

    let path = dir.join("tokenizer.json");
    tokenizer
        .inner()
        .save(&path, false)
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    let tc = serde_json::json!({
        "chat_template": tokenizer.chat_template,
        "add_bos_token": tokenizer.add_bos,
    });
    let path = dir.join("tokenizer_config.json");
    std::fs::write(&path, tc.to_string()).map_err(io(&path))?;
    Ok(())
}
