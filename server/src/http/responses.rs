//! Response bodies and stream chunks in OpenAI's shapes, plus the `epas` object.

use serde_json::{json, Value};

use crate::engine::{TokenLogprobs, Usage};

/// Which API a response belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Completion,
    Chat,
}

/// Fixed fields of every response and chunk of one request.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub endpoint: Endpoint,
    pub epas: Value,
}

impl Envelope {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Completion, _) => "text_completion",
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
        }
    }

    /// A stream chunk with one choice.
    pub fn chunk(
        &self,
        index: usize,
        text: &str,
        first: bool,
        finish: Option<&str>,
        logprobs: Value,
    ) -> Value {
        let choice = match self.endpoint {
            Endpoint::Completion => json!({
                "index": index, "text": text, "logprobs": logprobs, "finish_reason": finish,
            }),
            Endpoint::Chat => {
                let mut delta = serde_json::Map::new();
                if !text.is_empty() || (first && finish.is_none()) {
                    delta.insert("content".into(), json!(text));
                }
                return self.delta_chunk(index, delta, first, finish, logprobs);
            }
        };
        self.chunk_of(choice)
    }

    /// A chat stream chunk whose choice has `delta` (the role is added to the first).
    pub fn delta_chunk(
        &self,
        index: usize,
        delta: serde_json::Map<String, Value>,
        first: bool,
        finish: Option<&str>,
        logprobs: Value,
    ) -> Value {
        let mut full = serde_json::Map::new();
        if first {
            full.insert("role".into(), json!("assistant"));
        }
        full.extend(delta);
        self.chunk_of(json!({
            "index": index, "delta": full, "logprobs": logprobs, "finish_reason": finish,
        }))
    }

    fn chunk_of(&self, choice: Value) -> Value {
        json!({
            "id": self.id, "object": self.object(true), "created": self.created,
            "model": self.model, "choices": [choice], "epas": self.epas,
        })
    }

    /// The last chunk when `stream_options.include_usage` is set.
    pub fn usage_chunk(&self, usage: &Usage) -> Value {
        json!({
            "id": self.id, "object": self.object(true), "created": self.created,
            "model": self.model, "choices": [], "usage": usage_json(usage), "epas": self.epas,
        })
    }

    /// The whole response of a non-streamed request.
    pub fn response(&self, choices: Vec<Value>, usage: &Usage) -> Value {
        json!({
            "id": self.id, "object": self.object(false), "created": self.created,
            "model": self.model, "choices": choices, "usage": usage_json(usage), "epas": self.epas,
        })
    }

    pub fn choice(&self, index: usize, text: &str, finish: &str, logprobs: Value) -> Value {
        match self.endpoint {
            Endpoint::Completion => json!({
                "index": index, "text": text, "logprobs": logprobs, "finish_reason": finish,
            }),
            Endpoint::Chat => self.message_choice(
                index,
                json!({"role": "assistant", "content": text}),
                finish,
                logprobs,
            ),
        }
    }

    /// A chat choice with `message`.
    pub fn message_choice(
        &self,
        index: usize,
        message: Value,
        finish: &str,
        logprobs: Value,
    ) -> Value {
        json!({"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish})
    }
}

pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

/// Log-probabilities of generated tokens, accumulated per choice in the endpoint's format.
#[derive(Debug, Clone)]
struct TokenEntry {
    token: String,
    logprob: f32,
    top: Vec<(String, f32)>,
}

#[derive(Debug, Clone, Default)]
pub struct LogprobsBuilder {
    tokens: Vec<TokenEntry>,
    offset: usize,
    offsets: Vec<usize>,
}

impl LogprobsBuilder {
    pub fn push(&mut self, token: String, lp: &TokenLogprobs, top: Vec<(String, f32)>) {
        self.offsets.push(self.offset);
        self.offset += token.len();
        self.tokens.push(TokenEntry {
            token,
            logprob: lp.logprob,
            top,
        });
    }

    pub fn to_json(&self, endpoint: Endpoint) -> Value {
        match endpoint {
            Endpoint::Completion => json!({
                "tokens": self.tokens.iter().map(|t| &t.token).collect::<Vec<_>>(),
                "token_logprobs": self.tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                "top_logprobs": self.tokens.iter().map(|t| {
                    t.top.iter().map(|(s, l)| (s.clone(), json!(l))).collect::<serde_json::Map<_, _>>()
                }).collect::<Vec<_>>(),
                "text_offset": self.offsets,
            }),
            Endpoint::Chat => json!({
                "content": self.tokens.iter().map(|t| json!({
                    "token": t.token,
                    "logprob": t.logprob,
                    "bytes": t.token.as_bytes(),
                    "top_logprobs": t.top.iter().map(|(s, l)| json!({
                        "token": s, "logprob": l, "bytes": s.as_bytes(),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            }),
        }
    }
}
