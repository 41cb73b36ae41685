//! The answer of `/v1/messages`: a `message` object, or Anthropic's stream events
//! (`message_start`, `content_block_start`, `ping`, `content_block_delta`,
//! `content_block_stop`, `message_delta`, `message_stop`; `error` if the request fails). With
//! tools, the text is read for calls: each becomes a `tool_use` block (streamed whole: its start,
//! one `input_json_delta`, its stop) and the stop reason is `tool_use`.

use axum::response::sse::Event;
use serde_json::{json, Value};

use super::super::answer_format::{sse_event, AnswerFormat, ChoiceOutput, StreamStep};
use super::super::tool_calls::{CallStream, FunctionCall, Piece, ReadOutput, ToolOutput};
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
    /// How the answer is read for tool calls (`None`: it is not).
    tools: Option<ToolOutput>,
    /// The streamed answer read for calls (with tools).
    calls: Option<CallStream>,
    blocks: StreamBlocks,
}

impl MessagesFormat {
    pub fn new(
        id: String,
        model: String,
        epas: Value,
        input_tokens: usize,
        tools: Option<ToolOutput>,
    ) -> Self {
        Self {
            id,
            model,
            epas,
            input_tokens,
            stop: None,
            calls: tools.as_ref().map(ToolOutput::stream),
            tools,
            blocks: StreamBlocks::default(),
        }
    }

    fn message(&self, content: Value, stop: Value, stop_sequence: Value, usage: Value) -> Value {
        json!({
            "id": self.id, "type": "message", "role": "assistant", "content": content,
            "model": self.model, "stop_reason": stop, "stop_sequence": stop_sequence,
            "usage": usage, "epas": self.epas,
        })
    }

    /// The events of `pieces`, in order.
    fn pieces(&mut self, pieces: Vec<Piece>) -> Vec<Value> {
        let mut events = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Content(text) => events.extend(self.blocks.text(&text)),
                Piece::Call { call, .. } => events.extend(self.blocks.tool_use(&call)),
            }
        }
        events
    }

    /// The events of streamed `text`, read for calls when there are tools.
    fn text(&mut self, text: &str, last: bool) -> Vec<Value> {
        let pieces = match (&mut self.calls, last) {
            (Some(calls), false) => calls.push(text),
            (Some(calls), true) => calls.finish(text),
            (None, _) => vec![Piece::Content(text.to_string())],
        };
        self.pieces(pieces)
    }

    fn called(&self) -> bool {
        self.calls.as_ref().is_some_and(CallStream::called)
    }
}

/// Anthropic's `stop_reason` and `stop_sequence`: `tool_use` when the answer called tools, else
/// a stop string, `max_tokens`, or the model's end of turn.
pub fn stop_reason(
    called: bool,
    finish: FinishReason,
    stop_sequence: Option<String>,
) -> (&'static str, Option<String>) {
    match (called, stop_sequence, finish) {
        (true, _, _) => ("tool_use", None),
        (false, Some(s), _) => ("stop_sequence", Some(s)),
        (false, None, FinishReason::Length) => ("max_tokens", None),
        (false, None, FinishReason::Stop) => ("end_turn", None),
    }
}

fn usage_json(usage: &Usage) -> Value {
    json!({"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens})
}

/// An event of Anthropic's stream, named as its data's `type`.
fn event(value: &Value) -> Event {
    sse_event(value["type"].as_str(), value)
}

/// A call as a `tool_use` content block (`input` the arguments object).
fn tool_use_block(call: &FunctionCall, input: Value) -> Value {
    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input})
}

fn arguments_object(call: &FunctionCall) -> Value {
    serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!(call.arguments))
}

/// The content blocks a stream has opened: a text block stays open while text comes; a
/// `tool_use` block is sent whole.
#[derive(Default)]
struct StreamBlocks {
    /// Blocks started so far (the next block's index).
    started: usize,
    text_open: bool,
}

impl StreamBlocks {
    fn open_text(&mut self) -> Vec<Value> {
        if self.text_open {
            return Vec::new();
        }
        self.text_open = true;
        self.started += 1;
        vec![
            json!({"type": "content_block_start", "index": self.started - 1,
                    "content_block": {"type": "text", "text": ""}}),
        ]
    }

    fn text(&mut self, text: &str) -> Vec<Value> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut events = self.open_text();
        events.push(
            json!({"type": "content_block_delta", "index": self.started - 1,
                           "delta": {"type": "text_delta", "text": text}}),
        );
        events
    }

    fn tool_use(&mut self, call: &FunctionCall) -> Vec<Value> {
        let mut events = self.close_text();
        let index = self.started;
        self.started += 1;
        events.extend([
            json!({"type": "content_block_start", "index": index,
                   "content_block": tool_use_block(call, json!({}))}),
            json!({"type": "content_block_delta", "index": index,
                   "delta": {"type": "input_json_delta", "partial_json": call.arguments}}),
            stop_event(index),
        ]);
        events
    }

    fn close_text(&mut self) -> Vec<Value> {
        if !std::mem::replace(&mut self.text_open, false) {
            return Vec::new();
        }
        vec![stop_event(self.started - 1)]
    }

    /// Closes the open block; an answer with no block at all gets an empty text block.
    fn end(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        if self.started == 0 {
            events.extend(self.open_text());
        }
        events.extend(self.close_text());
        events
    }
}

fn stop_event(index: usize) -> Value {
    json!({"type": "content_block_stop", "index": index})
}

impl MessagesFormat {
    /// The data of the events that open a stream.
    pub(super) fn opening_data(&mut self) -> Vec<Value> {
        let usage = json!({"input_tokens": self.input_tokens, "output_tokens": 0});
        let message = self.message(json!([]), Value::Null, Value::Null, usage);
        let mut events = vec![json!({"type": "message_start", "message": message})];
        if self.tools.is_none() {
            events.extend(self.blocks.open_text());
        }
        events.push(json!({"type": "ping"}));
        events
    }

    /// The data of the events of one stream step.
    pub(super) fn step_data(&mut self, step: StreamStep<'_>) -> Vec<Value> {
        match step {
            StreamStep::Text { text, .. } => self.text(text, false),
            StreamStep::Finished {
                text,
                reason,
                stop_sequence,
                ..
            } => {
                self.stop = Some((reason, stop_sequence.map(str::to_owned)));
                self.text(text, true)
            }
            StreamStep::Done(usage) => {
                let (reason, stop_sequence) =
                    self.stop.clone().unwrap_or((FinishReason::Length, None));
                let (reason, stop_sequence) = stop_reason(self.called(), reason, stop_sequence);
                let mut events = self.blocks.end();
                events.extend([
                    json!({"type": "message_delta",
                           "delta": {"stop_reason": reason, "stop_sequence": stop_sequence},
                           "usage": usage_json(usage)}),
                    json!({"type": "message_stop"}),
                ]);
                events
            }
            StreamStep::Failed(error) => vec![error_body(error)],
        }
    }
}

impl AnswerFormat for MessagesFormat {
    fn opening(&mut self) -> Vec<Event> {
        self.opening_data().iter().map(event).collect()
    }

    fn step(&mut self, step: StreamStep<'_>) -> Vec<Event> {
        self.step_data(step).iter().map(event).collect()
    }

    fn response(&self, choices: Vec<ChoiceOutput>, usage: &Usage) -> Value {
        let choice = choices.into_iter().next().unwrap_or_default();
        let read = match &self.tools {
            Some(tools) => tools.read(&choice.text),
            None => ReadOutput {
                content: choice.text,
                calls: Vec::new(),
            },
        };
        let mut content = Vec::with_capacity(read.calls.len() + 1);
        if !read.content.is_empty() || read.calls.is_empty() {
            content.push(json!({"type": "text", "text": read.content}));
        }
        for call in &read.calls {
            content.push(tool_use_block(call, arguments_object(call)));
        }
        let (reason, stop_sequence) =
            stop_reason(!read.calls.is_empty(), choice.finish, choice.stop_sequence);
        self.message(
            json!(content),
            json!(reason),
            json!(stop_sequence),
            usage_json(usage),
        )
    }
}
