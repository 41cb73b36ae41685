//! SmolLM2's tokenizer built from GGUF metadata gives llama.cpp's ids (digits split one by one,
//! no prefix space, special tokens parsed), and decodes back to the same text.

mod common;

use common::*;
use epas_model::ChatMessage;

#[test]
fn ids_equal_llamacpp_for_every_vector() {
    let (_, tok) = smollm2();
    let vectors = llamacpp_vectors();
    assert!(vectors.len() >= 10);
    for v in &vectors {
        let ids = tok.encode(&v.text).unwrap();
        assert_eq!(ids, v.ids, "{:?}", v.text);
    }
    // The set covers what the tokenizer fix is about.
    let texts: Vec<&str> = vectors.iter().map(|v| v.text.as_str()).collect();
    assert!(texts.iter().any(|t| t.contains("<|im_start|>")));
    assert!(texts.iter().any(|t| t.contains("1234")));
    assert!(texts.iter().any(|t| t.starts_with("   ")));
    assert!(texts.iter().any(|t| t.contains('日')));
}

#[test]
fn decode_round_trips_text() {
    let (_, tok) = smollm2();
    for v in llamacpp_vectors() {
        if v.text.contains("<|") {
            continue;
        }
        assert_eq!(tok.decode(&v.ids, false).unwrap(), v.text);
    }
}

#[test]
fn chat_template_renders_chatml_with_llamacpp_ids() {
    let (_, tok) = smollm2();
    let messages = [ChatMessage {
        role: "user".into(),
        content: "What is 2+2?".into(),
    }];
    let text = tok.apply_chat_template(&messages, true).unwrap();
    assert!(
        text.contains("<|im_start|>user\nWhat is 2+2?<|im_end|>\n"),
        "{text:?}"
    );
    assert!(text.ends_with("<|im_start|>assistant\n"), "{text:?}");
    let ids = tok.encode(&text).unwrap();
    let chatml = llamacpp_vectors()
        .into_iter()
        .find(|v| v.text == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
        .unwrap();
    assert!(
        ids.ends_with(&chatml.ids),
        "templated ids {ids:?} do not end with llama.cpp's {:?}",
        chatml.ids
    );
    let im_end = tok.encode("<|im_end|>").unwrap();
    assert_eq!(im_end.len(), 1);
    assert!(
        tok.is_eos(im_end[0]),
        "eos {:?}, <|im_end|> {im_end:?}",
        tok.eos_tokens
    );
}

#[test]
fn incremental_decoding_never_splits_characters() {
    let (_, tok) = smollm2();
    let text = "naïve café, 日本語, emoji 🚀🙂 ∑ x² ≤ ∞";
    let ids = tok.encode(text).unwrap();
    let mut dec = epas_model::IncrementalDecoder::new();
    let mut out = String::new();
    for id in ids {
        let delta = dec.push(tok, id).unwrap();
        assert!(!delta.contains('\u{FFFD}'), "{delta:?}");
        out.push_str(&delta);
    }
    out.push_str(&dec.flush(tok).unwrap());
    assert_eq!(out, text);
}
