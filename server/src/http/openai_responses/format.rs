//! The answer of `/v1/responses`: a `response` object whose output is one assistant message,
//! or the Responses stream events, each with its `sequence_number`.

use axum::response::sse::Event;
use serde_json::{json, Value};

use super::super::answer_format::{sse_event, AnswerFormat, ChoiceOutput, StreamStep};
use crate::engine::{FinishReason, Usage};

/// Fixed fields of one request's answer.
pub struct ResponsesFormat {
    id: String,
    item_id: String,
    created_at: u64,
    /// `model`, `epas` and the request fields a response repeats (`instructions`,
    /// `max_output_tokens`, `temperature`, `text`...).
    fixed: Value,
    /// Events sent so far (the next event's `sequence_number`).
    sequence: u64,
    /// The streamed text so far, and how the choice ended.
    text: String,
    finish: Option<FinishReason>,
}

impl ResponsesFormat {
    pub fn new(id: String, item_id: String, created_at: u64, fixed: Value) -> Self {
        Self {
            id,
            item_id,
            created_at,
            fixed,
            sequence: 0,
            text: String::new(),
            finish: None,
        }
    }

    /// The `response` object in `status`, with `output`, and `usage` once known.
    fn response_object(&self, status: &str, output: Value, usage: Option<&Usage>) -> Value {
        let mut object = json!({
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": status, "error": null,
            "incomplete_details": if status == "incomplete" {
                json!({"reason": "max_output_tokens"})
            } else {
                Value::Null
            },
            "output": output, "usage": usage.map(usage_json),
            "tools": [], "tool_choice": "auto", "store": false,
            "previous_response_id": null,
        });
        if let (Value::Object(map), Value::Object(fixed)) = (&mut object, &self.fixed) {
            map.extend(fixed.clone());
        }
        object
    }

    fn message_item(&self, status: &str, content: Value) -> Value {
        json!({"type": "message", "id": self.item_id, "status": status, "role": "assistant",
               "content": content})
    }

    /// An event of type `kind` with `fields`, numbered.
    fn event(&mut self, kind: &str, mut fields: Value) -> Event {
        if let Value::Object(map) = &mut fields {
            map.insert("type".into(), json!(kind));
            map.insert("sequence_number".into(), json!(self.sequence));
        }
        self.sequence += 1;
        sse_event(Some(kind), &fields)
    }

    fn text_event(&mut self, kind: &str, fields: Value) -> Event {
        let mut fields = fields;
        if let Value::Object(map) = &mut fields {
            map.insert("item_id".into(), json!(self.item_id));
            map.insert("output_index".into(), json!(0));
            map.insert("content_index".into(), json!(0));
        }
        self.event(kind, fields)
    }

    fn delta(&mut self, text: &str) -> Vec<Event> {
        if text.is_empty() {
            return Vec::new();
        }
        self.text.push_str(text);
        vec![self.text_event(
            "response.output_text.delta",
            json!({"delta": text, "logprobs": []}),
        )]
    }

    fn done(&mut self, usage: &Usage) -> Vec<Event> {
        let status = status(self.finish.unwrap_or(FinishReason::Length));
        let text = self.text.clone();
        let part = output_text(&text);
        let item = self.message_item(status, json!([part]));
        let response = self.response_object(status, json!([item]), Some(usage));
        let last = match status {
            "completed" => "response.completed",
            _ => "response.incomplete",
        };
        vec![
            self.text_event(
                "response.output_text.done",
                json!({"text": text, "logprobs": []}),
            ),
            self.text_event("response.content_part.done", json!({"part": part})),
            self.event(
                "response.output_item.done",
                json!({"output_index": 0, "item": item}),
            ),
            self.event(last, json!({"response": response})),
        ]
    }
}

/// `completed`, or `incomplete` when `max_output_tokens` cut the output.
fn status(finish: FinishReason) -> &'static str {
    match finish {
        FinishReason::Stop => "completed",
        FinishReason::Length => "incomplete",
    }
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

impl AnswerFormat for ResponsesFormat {
    fn opening(&mut self) -> Vec<Event> {
        let response = self.response_object("in_progress", json!([]), None);
        let item = self.message_item("in_progress", json!([]));
        vec![
            self.event("response.created", json!({"response": response})),
            self.event("response.in_progress", json!({"response": response})),
            self.event(
                "response.output_item.added",
                json!({"output_index": 0, "item": item}),
            ),
            self.text_event(
                "response.content_part.added",
                json!({"part": output_text("")}),
            ),
        ]
    }

    fn step(&mut self, step: StreamStep<'_>) -> Vec<Event> {
        match step {
            StreamStep::Text { text, .. } => self.delta(text),
            StreamStep::Finished { text, reason, .. } => {
                self.finish = Some(reason);
                self.delta(text)
            }
            StreamStep::Done(usage) => self.done(usage),
            StreamStep::Failed(error) => {
                let mut response = self.response_object("failed", json!([]), None);
                response["error"] = json!({"code": error.code.unwrap_or(error.kind),
                                           "message": error.message});
                vec![
                    self.event(
                        "error",
                        json!({"code": error.code, "message": error.message,
                               "param": error.param}),
                    ),
                    self.event("response.failed", json!({"response": response})),
                ]
            }
        }
    }

    fn response(&self, choices: Vec<ChoiceOutput>, usage: &Usage) -> Value {
        let choice = choices.into_iter().next().unwrap_or_default();
        let status = status(choice.finish);
        let item = self.message_item(status, json!([output_text(&choice.text)]));
        self.response_object(status, json!([item]), Some(usage))
    }
}
