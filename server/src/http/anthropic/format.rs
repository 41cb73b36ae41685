//! The answer of `/v1/messages`: a `message` object, or Anthropic's stream events
//! (`message_start`, `content_block_start`, `ping`, `content_block_delta`,
//! `content_block_stop`, `message_delta`, `message_stop`; `error` if the request fails).

use axum::response::sse::Event;
use serde_json::{json, Value};

use super::super::answer_format::{sse_event, AnswerFormat, ChoiceOutput, StreamStep};
use super::errors::error_body;
use crate::engine::{FinishReason, Usage};

/// Fixed fields of one request's answer.
pub struct MessagesFormat {
    id: String,
    model: String,
    epas: Value,
    /// Prompt tokens, known before the engine runs (for `message_start`).
    input_tokens: usize,
    /// The stop reason of the only choice, once it ended.
    stop: Option<(FinishReason, Option<String>)>,
}

impl MessagesFormat {
    pub fn new(id: String, model: String, epas: Value, input_tokens: usize) -> Self {
        Self {
            id,
            model,
            epas,
            input_tokens,
            stop: None,
        }
    }

    fn message(&self, content: Value, stop: Value, stop_sequence: Value, usage: Value) -> Value {
        json!({
            "id": self.id, "type": "message", "role": "assistant", "content": content,
            "model": self.model, "stop_reason": stop, "stop_sequence": stop_sequence,
            "usage": usage, "epas": self.epas,
        })
    }
}

/// Anthropic's `stop_reason`: a stop string, `max_tokens`, or the model's end of turn.
pub fn stop_reason(finish: FinishReason, stop_sequence: Option<&str>) -> &'static str {
    match (stop_sequence, finish) {
        (Some(_), _) => "stop_sequence",
        (None, FinishReason::Length) => "max_tokens",
        (None, FinishReason::Stop) => "end_turn",
    }
}

fn usage_json(usage: &Usage) -> Value {
    json!({"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens})
}

fn event(name: &str, value: Value) -> Event {
    sse_event(Some(name), &value)
}

fn text_delta(text: &str) -> Event {
    event(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": text}}),
    )
}

impl AnswerFormat for MessagesFormat {
    fn opening(&mut self) -> Vec<Event> {
        let usage = json!({"input_tokens": self.input_tokens, "output_tokens": 0});
        let message = self.message(json!([]), Value::Null, Value::Null, usage);
        vec![
            event(
                "message_start",
                json!({"type": "message_start", "message": message}),
            ),
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}}),
            ),
            event("ping", json!({"type": "ping"})),
        ]
    }

    fn step(&mut self, step: StreamStep<'_>) -> Vec<Event> {
        match step {
            StreamStep::Text { text, .. } if !text.is_empty() => vec![text_delta(text)],
            StreamStep::Text { .. } => Vec::new(),
            StreamStep::Finished {
                text,
                reason,
                stop_sequence,
                ..
            } => {
                self.stop = Some((reason, stop_sequence.map(str::to_owned)));
                if text.is_empty() {
                    Vec::new()
                } else {
                    vec![text_delta(text)]
                }
            }
            StreamStep::Done(usage) => {
                let (reason, stop_sequence) =
                    self.stop.clone().unwrap_or((FinishReason::Length, None));
                vec![
                    event(
                        "content_block_stop",
                        json!({"type": "content_block_stop", "index": 0}),
                    ),
                    event(
                        "message_delta",
                        json!({"type": "message_delta",
                               "delta": {"stop_reason": stop_reason(reason, stop_sequence.as_deref()),
                                         "stop_sequence": stop_sequence},
                               "usage": usage_json(usage)}),
                    ),
                    event("message_stop", json!({"type": "message_stop"})),
                ]
            }
            StreamStep::Failed(error) => vec![event("error", error_body(error))],
        }
    }

    fn response(&self, choices: Vec<ChoiceOutput>, usage: &Usage) -> Value {
        let choice = choices.into_iter().next().unwrap_or_default();
        let reason = stop_reason(choice.finish, choice.stop_sequence.as_deref());
        self.message(
            json!([{"type": "text", "text": choice.text}]),
            json!(reason),
            json!(choice.stop_sequence),
            usage_json(usage),
        )
    }
}
