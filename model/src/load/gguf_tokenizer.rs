//! Builds a byte-level BPE tokenizer from GGUF metadata (`tokenizer.ggml.*`), matching
//! llama.cpp's pre-tokenization for the pre-tokenizer types it names.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{ModelError, Result};
use crate::tokenizer::TextTokenizer;

/// llama.cpp's token type for control tokens such as `<|im_start|>`.
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

fn strings<'a>(meta: &'a HashMap<String, Value>, key: &str, path: &Path) -> Result<Vec<&'a str>> {
    let missing = || ModelError::Missing {
        path: path.to_path_buf(),
        what: format!("metadata {key}"),
    };
    match meta.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                _ => Err(missing()),
            })
            .collect(),
        _ => Err(missing()),
    }
}

fn id(meta: &HashMap<String, Value>, key: &str) -> Option<u32> {
    match meta.get(key) {
        Some(Value::U32(v)) => Some(*v),
        Some(Value::I32(v)) if *v >= 0 => Some(*v as u32),
        Some(Value::U64(v)) => u32::try_from(*v).ok(),
        _ => None,
    }
}

pub(crate) fn tokenizer_from_gguf(
    meta: &HashMap<String, Value>,
    path: &Path,
) -> Result<TextTokenizer> {
    let model = match meta.get("tokenizer.ggml.model") {
        Some(Value::String(s)) => s.as_str(),
        _ => "",
    };
    if model != "gpt2" {
        return Err(ModelError::Tokenizer(format!(
            "tokenizer.ggml.model {model:?} is not supported (byte-level BPE \"gpt2\" is)"
        )));
    }
    let tokens = strings(meta, "tokenizer.ggml.tokens", path)?;
    let merges = strings(meta, "tokenizer.ggml.merges", path)?;
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let merges: Vec<(String, String)> = merges
        .iter()
        .filter_map(|m| m.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    let mut tokenizer = Tokenizer::new(bpe);
    let pre = match meta.get("tokenizer.ggml.pre") {
        Some(Value::String(s)) => s.as_str(),
        _ => "default",
    };
    let byte_level = ByteLevel::new(false, true, true);
    let pre_tokenizer: PreTokenizerWrapper = match pre {
        // llama.cpp splits digits one by one before the GPT-2 regex for these.
        "smollm" | "starcoder" | "refact" => {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        }
        _ => byte_level.into(),
    };
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    let types: Vec<i32> = match meta.get("tokenizer.ggml.token_type") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::I32(x) => *x,
                Value::U32(x) => *x as i32,
                _ => 1,
            })
            .collect(),
        _ => Vec::new(),
    };
    let special: Vec<AddedToken> = types
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
        .filter_map(|(i, &t)| {
            tokens
                .get(i)
                .map(|s| AddedToken::from(s.to_string(), t == TOKEN_TYPE_CONTROL))
        })
        .collect();
    tokenizer
        .add_special_tokens(special)
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    let bos = id(meta, "tokenizer.ggml.bos_token_id");
    // End of generation: EOS, and EOT where the model has one (as llama.cpp stops at both).
    let mut eos: Vec<u32> = id(meta, "tokenizer.ggml.eos_token_id")
        .into_iter()
        .collect();
    if let Some(eot) = id(meta, "tokenizer.ggml.eot_token_id") {
        if !eos.contains(&eot) {
            eos.push(eot);
        }
    }
    let add_bos = matches!(
        meta.get("tokenizer.ggml.add_bos_token"),
        Some(Value::Bool(true))
    );
    let template = match meta.get("tokenizer.chat_template") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    Ok(TextTokenizer::new(tokenizer, bos, eos, add_bos, template))
}
