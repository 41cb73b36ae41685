//! A byte-level BPE tokenizer trained on the corpus, with the same pre-tokenization as
//! SmolLM2 / llama.cpp's `smollm` type (digits one by one, then the GPT-2 regex), so a GGUF export
//! tokenizes identically in llama.cpp and here.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use crate::data::Document;
use crate::error::{TrainError, TrainResult};
use epas_model::TextTokenizer;

/// End of a document; the first token of the vocabulary.
pub const END_OF_TEXT: &str = "<|endoftext|>";
const IM_START: &str = "<|im_start|>";
const IM_END: &str = "<|im_end|>";

/// ChatML, as SmolLM2 uses it.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Trains a tokenizer of `vocab_size` entries (special tokens included) on `docs`.
pub fn train_bpe(docs: &[Document], vocab_size: usize) -> TrainResult<TextTokenizer> {
    let specials = [END_OF_TEXT, IM_START, IM_END];
    let min_vocab = 256 + specials.len() + 1;
    if vocab_size < min_vocab {
        return Err(TrainError::Options(format!(
            "--vocab-size must be at least {min_vocab} (256 bytes, {} special tokens, one merge)",
            specials.len()
        )));
    }
    let special_tokens: Vec<AddedToken> = specials
        .iter()
        .map(|s| AddedToken::from(s.to_string(), true))
        .collect();
    let mut trainer = TrainerWrapper::BpeTrainer(
        BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(special_tokens.clone())
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build(),
    );
    let mut tokenizer = Tokenizer::new(BPE::default());
    let byte_level = ByteLevel::new(false, true, true);
    tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        byte_level.into(),
    ])));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    tokenizer
        .train(&mut trainer, docs.iter().map(|d| d.text.as_str()))
        .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    tokenizer
        .add_special_tokens(special_tokens)
        .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    let id = |s: &str| {
        tokenizer
            .token_to_id(s)
            .ok_or_else(|| TrainError::Tokenizer(format!("{s} missing after training")))
    };
    let eos = vec![id(END_OF_TEXT)?, id(IM_END)?];
    Ok(TextTokenizer::new(
        tokenizer,
        None,
        eos,
        false,
        Some(CHATML_TEMPLATE.to_string()),
    ))
}

/// The token that separates documents in the training stream.
pub fn document_separator(tokenizer: &TextTokenizer) -> TrainResult<u32> {
    tokenizer
        .inner()
        .token_to_id(END_OF_TEXT)
        .or_else(|| tokenizer.eos_tokens.first().copied())
        .ok_or_else(|| {
            TrainError::Tokenizer(format!(
                "the tokenizer has neither {END_OF_TEXT} nor an end-of-sequence token"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trains_a_byte_level_tokenizer_that_round_trips() {
        let text = "The state of the union is strong. In 1999 we counted 12345 votes. ".repeat(50);
        let docs = vec![Document {
            path: "x".into(),
            text,
        }];
        let tok = train_bpe(&docs, 300).unwrap();
        // Merges stop at the vocabulary size or when no pair occurs twice.
        let size = tok.inner().get_vocab_size(true);
        assert!(size > 259 && size <= 300, "{size}");
        assert_eq!(tok.inner().token_to_id(END_OF_TEXT), Some(0));
        let s = "Union 2024: naïve café ✓";
        let ids = tok.encode(s).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), s);
        // Digits are split one by one, as llama.cpp's smollm pre-tokenizer does.
        let ids = tok.encode("12345").unwrap();
        assert_eq!(ids.len(), 5);
        assert!(train_bpe(&docs, 100).is_err());
    }
}
