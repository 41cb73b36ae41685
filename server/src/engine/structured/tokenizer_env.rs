//! The model's tokenizer as llguidance needs it: every token's bytes in a trie (special tokens
//! marked), and tokenization of byte strings.

use std::sync::Arc;

use epas_model::TextTokenizer;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

struct ModelTokenizer {
    tokenizer: Arc<TextTokenizer>,
    trie: TokTrie,
    /// Whether tokenizing a text gives the tokens the model itself would see for it: true for
    /// byte-level BPE (GPT-2 style: SmolLM2, Llama 3, Qwen). SentencePiece tokenizers prepend
    /// "▁" to every encoded text, so llguidance must not force tokens from their tokenization.
    canonical: bool,
}

impl TokenizerEnv for ModelTokenizer {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// Bytes that end inside a UTF-8 character are tokenized as text up to it and byte by byte
    /// after it (never as U+FFFD).
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |text| {
            self.tokenizer
                .inner()
                .encode(text, false)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_default()
        })
    }

    fn tokenize_is_canonical(&self) -> bool {
        self.canonical
    }
}

/// The token environment of `tokenizer` for a model of `vocab_size` logits (ids past the
/// tokenizer's own vocabulary, padding, are never allowed).
pub(crate) fn token_env(
    tokenizer: Arc<TextTokenizer>,
    vocab_size: usize,
) -> Result<TokEnv, String> {
    let json: serde_json::Value = tokenizer
        .inner()
        .to_string(false)
        .map_err(|e| format!("serialising the tokenizer: {e}"))
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))?;
    let mut words = llguidance::token_bytes_from_tokenizer_json(&json)
        .map_err(|e| format!("reading the tokenizer's tokens: {e}"))?;
    if words.len() > vocab_size {
        return Err(format!(
            "the tokenizer has {} tokens, the model only {vocab_size} logits",
            words.len()
        ));
    }
    words.resize(vocab_size, Vec::new());
    let eos = tokenizer.eos_tokens.first().copied().unwrap_or(0);
    let mut info = TokRxInfo::new(vocab_size as u32, eos);
    info.tok_bos = tokenizer.bos_token;
    let trie = TokTrie::from(&info, &words);
    let canonical = is_byte_level(&json);
    Ok(Arc::new(ModelTokenizer {
        tokenizer,
        trie,
        canonical,
    }))
}

/// Whether a tokenizer.json describes a byte-level BPE tokenizer.
fn is_byte_level(json: &serde_json::Value) -> bool {
    ["pre_tokenizer", "decoder"]
        .iter()
        .any(|part| json[part].to_string().contains("\"ByteLevel\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_ending_inside_a_character_keep_their_bytes() {
        let (_, tokenizer) = epas_builtin::load_builtin(&candle_core::Device::Cpu).unwrap();
        let vocab = tokenizer.inner().get_vocab_size(true);
        let env = token_env(Arc::new(tokenizer), vocab).unwrap();
        assert!(
            env.tokenize_is_canonical(),
            "SmolLM2's tokenizer is byte-level BPE"
        );
        let text = "{\"name\": \"caf\u{e9}".as_bytes();
        let cut = &text[..text.len() - 1];
        let tokens = env.tokenize_bytes(cut);
        assert_eq!(env.tok_trie().decode_raw(&tokens), cut);
    }

    #[test]
    fn sentencepiece_tokenizers_are_not_canonical() {
        let sp = serde_json::json!({"pre_tokenizer": {"type": "Metaspace"},
            "decoder": {"type": "Sequence", "decoders": [{"type": "Replace"}]}});
        let bpe = serde_json::json!({"pre_tokenizer": {"type": "Sequence",
            "pretokenizers": [{"type": "ByteLevel"}]}, "decoder": {"type": "ByteLevel"}});
        assert!(!is_byte_level(&sp));
        assert!(is_byte_level(&bpe));
    }
}
