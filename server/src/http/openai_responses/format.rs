//! The answer of `/v1/responses`: a `response` object whose output is an assistant message and,
//! with tools, the `function_call` items read out of the text; or the Responses stream events,
//! each with its `sequence_number`. A streamed call is an item of its own
//! (`response.output_item.added`, `response.function_call_arguments.delta` / `.done`,
//! `response.output_item.done`).

use axum::response::sse::Event;
use serde_json::{json, Value};

use super::super::answer_format::{sse_event, AnswerFormat, ChoiceOutput, StreamStep};
use super::super::generation::new_id;
use super::super::tool_calls::{CallStream, FunctionCall, Piece, ToolOutput};
use crate::engine::{FinishReason, Usage};

/// Fixed fields of one request's answer.
pub struct ResponsesFormat {
    id: String,
    created_at: u64,
    /// `model`, `epas` and the request fields a response repeats (`instructions`,
    /// `max_output_tokens`, `temperature`, `text`, `tools`...).
    fixed: Value,
    /// Events sent so far (the next event's `sequence_number`).
    sequence: u64,
    finish: Option<FinishReason>,
    /// How the answer is read for calls (`None`: it is not), and the stream so read.
    tools: Option<ToolOutput>,
    calls: Option<CallStream>,
    /// Output items finished so far, and the message being streamed.
    items: Vec<Value>,
    message: Option<OpenMessage>,
    /// The first message's id (given, so that an answer without tools has a known one).
    first_message_id: Option<String>,
}

/// A message item whose text is streaming.
struct OpenMessage {
    id: String,
    index: usize,
    text: String,
}

impl ResponsesFormat {
    pub fn new(
        id: String,
        message_id: String,
        created_at: u64,
        fixed: Value,
        tools: Option<ToolOutput>,
    ) -> Self {
        Self {
            id,
            created_at,
            fixed,
            sequence: 0,
            finish: None,
            calls: tools.as_ref().map(ToolOutput::stream),
            tools,
            items: Vec::new(),
            message: None,
            first_message_id: Some(message_id),
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
            "store": false, "previous_response_id": null,
        });
        if let (Value::Object(map), Value::Object(fixed)) = (&mut object, &self.fixed) {
            map.extend(fixed.clone());
        }
        object
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

    /// An event about the open message's text.
    fn text_event(&mut self, kind: &str, mut fields: Value) -> Event {
        if let (Value::Object(map), Some(open)) = (&mut fields, &self.message) {
            map.insert("item_id".into(), json!(open.id));
            map.insert("output_index".into(), json!(open.index));
            map.insert("content_index".into(), json!(0));
        }
        self.event(kind, fields)
    }

    fn message_id(&mut self) -> String {
        self.first_message_id
            .take()
            .unwrap_or_else(|| new_id("msg_"))
    }

    fn open_message(&mut self) -> Vec<Event> {
        if self.message.is_some() {
            return Vec::new();
        }
        let open = OpenMessage {
            id: self.message_id(),
            index: self.items.len(),
            text: String::new(),
        };
        let item = message_item(&open.id, "in_progress", json!([]));
        let index = open.index;
        self.message = Some(open);
        vec![
            self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            ),
            self.text_event(
                "response.content_part.added",
                json!({"part": output_text("")}),
            ),
        ]
    }

    fn close_message(&mut self, status: &str) -> Vec<Event> {
        let Some(open) = &self.message else {
            return Vec::new();
        };
        let (id, index, text) = (open.id.clone(), open.index, open.text.clone());
        let part = output_text(&text);
        let item = message_item(&id, status, json!([part]));
        let events = vec![
            self.text_event(
                "response.output_text.done",
                json!({"text": text, "logprobs": []}),
            ),
            self.text_event("response.content_part.done", json!({"part": part})),
            self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
            ),
        ];
        self.message = None;
        self.items.push(item);
        events
    }

    fn content(&mut self, text: &str) -> Vec<Event> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut events = self.open_message();
        if let Some(open) = &mut self.message {
            open.text.push_str(text);
        }
        events.push(self.text_event(
            "response.output_text.delta",
            json!({"delta": text, "logprobs": []}),
        ));
        events
    }

    fn call(&mut self, call: &FunctionCall) -> Vec<Event> {
        let mut events = self.close_message("completed");
        let index = self.items.len();
        let id = new_id("fc_");
        let added = function_call_item(&id, call, "", "in_progress");
        let done = function_call_item(&id, call, &call.arguments, "completed");
        events.extend([
            self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": added}),
            ),
            self.event(
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": index, "delta": call.arguments}),
            ),
            self.event(
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": index, "name": call.name,
                       "arguments": call.arguments}),
            ),
            self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": done}),
            ),
        ]);
        self.items.push(done);
        events
    }

    /// The events of streamed `text`, read for calls when there are tools.
    fn text(&mut self, text: &str, last: bool) -> Vec<Event> {
        let pieces = match (&mut self.calls, last) {
            (Some(calls), false) => calls.push(text),
            (Some(calls), true) => calls.finish(text),
            (None, _) => return self.content(text),
        };
        let mut events = Vec::new();
        for piece in pieces {
            events.extend(match piece {
                Piece::Content(text) => self.content(&text),
                Piece::Call { call, .. } => self.call(&call),
            });
        }
        events
    }

    fn done(&mut self, usage: &Usage) -> Vec<Event> {
        let status = status(self.finish.unwrap_or(FinishReason::Length));
        let mut events = Vec::new();
        if self.items.is_empty() {
            events.extend(self.open_message());
        }
        events.extend(self.close_message(status));
        let response = self.response_object(status, json!(self.items), Some(usage));
        let last = match status {
            "completed" => "response.completed",
            _ => "response.incomplete",
        };
        events.push(self.event(last, json!({"response": response})));
        events
    }
}

/// `completed`, or `incomplete` when `max_output_tokens` cut the output.
fn status(finish: FinishReason) -> &'static str {
    match finish {
        FinishReason::Stop => "completed",
        FinishReason::Length => "incomplete",
    }
}

fn message_item(id: &str, status: &str, content: Value) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
           "content": content})
}

fn function_call_item(id: &str, call: &FunctionCall, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call.id, "name": call.name,
           "arguments": arguments, "status": status})
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
        let mut events = vec![
            self.event("response.created", json!({"response": response})),
            self.event("response.in_progress", json!({"response": response})),
        ];
        // Without tools the answer is one message, opened at once; with tools the text decides.
        if self.tools.is_none() {
            events.extend(self.open_message());
        }
        events
    }

    fn step(&mut self, step: StreamStep<'_>) -> Vec<Event> {
        match step {
            StreamStep::Text { text, .. } => self.text(text, false),
            StreamStep::Finished { text, reason, .. } => {
                self.finish = Some(reason);
                self.text(text, true)
            }
            StreamStep::Done(usage) => self.done(usage),
            StreamStep::Failed(error) => {
                let mut output = self.items.clone();
                if let Some(open) = &self.message {
                    output.push(message_item(
                        &open.id,
                        "incomplete",
                        json!([output_text(&open.text)]),
                    ));
                }
                let mut response = self.response_object("failed", json!(output), None);
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
        let pieces = match &self.tools {
            Some(tools) => {
                let mut stream = tools.stream();
                let mut pieces = stream.push(&choice.text);
                pieces.extend(stream.finish(""));
                pieces
            }
            None => vec![Piece::Content(choice.text)],
        };
        let first_id = self.first_message_id.clone().unwrap_or_default();
        let output = output_items(pieces, first_id, status);
        self.response_object(status, json!(output), Some(usage))
    }
}

/// The output items of a whole answer's pieces, grouped as the stream groups them: each run of
/// content is a message (the first with `first_id`; the last one in `status`), each call a
/// `function_call` item; an answer with neither is one empty message.
fn output_items(pieces: Vec<Piece>, first_id: String, status: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut ids = std::iter::once(first_id).chain(std::iter::repeat_with(|| new_id("msg_")));
    let mut text: Option<String> = None;
    for piece in pieces {
        match piece {
            Piece::Content(t) if t.is_empty() => {}
            Piece::Content(t) => text.get_or_insert_with(String::new).push_str(&t),
            Piece::Call { call, .. } => {
                if let Some(t) = text.take() {
                    let id = ids.next().unwrap_or_default();
                    items.push(message_item(&id, "completed", json!([output_text(&t)])));
                }
                items.push(function_call_item(
                    &new_id("fc_"),
                    &call,
                    &call.arguments,
                    "completed",
                ));
            }
        }
    }
    if text.is_some() || items.is_empty() {
        let id = ids.next().unwrap_or_default();
        let t = text.unwrap_or_default();
        items.push(message_item(&id, status, json!([output_text(&t)])));
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> Piece {
        Piece::Call {
            index: 0,
            call: FunctionCall {
                id: id.into(),
                name: "f".into(),
                arguments: "{}".into(),
            },
        }
    }

    #[test]
    fn whole_output_items_group_pieces_as_the_stream_does() {
        let items = output_items(
            vec![
                Piece::Content("Let me ".into()),
                Piece::Content("check.".into()),
                call("call_1"),
                call("call_2"),
                Piece::Content("Done".into()),
            ],
            "msg_first".into(),
            "incomplete",
        );
        let kinds: Vec<&str> = items.iter().map(|i| i["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["message", "function_call", "function_call", "message"]
        );
        assert_eq!(items[0]["id"], "msg_first");
        assert_eq!(items[0]["status"], "completed");
        assert_eq!(items[0]["content"][0]["text"], "Let me check.");
        assert_eq!(items[1]["call_id"], "call_1");
        assert_ne!(items[3]["id"], "msg_first");
        assert_eq!(items[3]["status"], "incomplete");
        let only_calls = output_items(vec![call("c")], "m".into(), "completed");
        assert_eq!(only_calls.len(), 1);
        let nothing = output_items(Vec::new(), "m".into(), "completed");
        assert_eq!(nothing[0]["type"], "message");
        assert_eq!(nothing[0]["content"][0]["text"], "");
    }
}
