//! The model's tokenizer as llguidance needs it: every token's bytes in a trie (special tokens
//! marked), and tokenization of byte strings.

use std::sync::Arc;

use epas_model::TextTokenizer;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

struct ModelTokenizer {
    tokenizer: Arc<TextTokenizer>,
    trie: TokTrie,
}

impl TokenizerEnv for ModelTokenizer {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        let text = String::from_utf8_lossy(s);
        self.tokenizer
            .inner()
            .encode(text.as_ref(), false)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
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
    Ok(Arc::new(ModelTokenizer { tokenizer, trie }))
}
