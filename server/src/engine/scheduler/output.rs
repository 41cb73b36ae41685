//! A sampled token becomes stream output: detokenized text, stop strings and tokens, length
//! limits, and the text held back until a choice ends.

use epas_model::Sampled;
use epas_model::{IncrementalDecoder, TextTokenizer};

use super::sequence::Sequence;
use crate::engine::request::{EngineEvent, FinishReason, TokenLogprobs};

/// What one sampled token produced for its sequence.
pub(crate) struct TokenOutcome {
    /// The `Token` event to stream (none for an EOS or stop token, which is not emitted).
    pub event: Option<EngineEvent>,
    pub finish: Option<FinishReason>,
}

/// Appends `sampled` to `seq` and decides whether the choice ends with it. Validation keeps the
/// prompt plus `max_tokens` within the context, so `max_tokens` is the only length limit.
pub(crate) fn accept_token(
    seq: &mut Sequence,
    sampled: Sampled,
    tokenizer: &TextTokenizer,
    max_tokens: usize,
) -> TokenOutcome {
    let token = sampled.token;
    seq.tokens.push(token);
    let params = seq.params.clone();
    let is_eos = !params.ignore_eos && tokenizer.is_eos(token);
    if is_eos || params.stop_token_ids.contains(&token) {
        return TokenOutcome {
            event: None,
            finish: Some(FinishReason::Stop),
        };
    }
    let text = seq.decoder.push(tokenizer, token).unwrap_or_default();
    let check = seq.stop.push(&text);
    let event = EngineEvent::Token {
        index: seq.id.index,
        token,
        text: check.emit,
        logprobs: sampled.logprob.map(|logprob| TokenLogprobs {
            logprob,
            top: sampled.top_logprobs,
        }),
    };
    let finish = if check.stopped {
        // Nothing after a stop string is emitted, not even text held back (the stop matcher
        // emits nothing more once it matched).
        seq.decoder = IncrementalDecoder::new();
        Some(FinishReason::Stop)
    } else if seq.generated() >= max_tokens {
        Some(FinishReason::Length)
    } else {
        None
    };
    TokenOutcome {
        event: Some(event),
        finish,
    }
}

/// Text held back by the decoder or the stop matcher, released when the choice ends.
pub(crate) fn final_text(seq: &mut Sequence, tokenizer: &TextTokenizer) -> String {
    let tail = seq.decoder.flush(tokenizer).unwrap_or_default();
    let check = seq.stop.push(&tail);
    let mut text = check.emit;
    if !check.stopped {
        text.push_str(&seq.stop.flush());
    }
    text
}
