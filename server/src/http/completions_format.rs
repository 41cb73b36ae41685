//! The answers of `/v1/completions` and `/v1/chat/completions`: OpenAI's response and chunks,
//! `data: [DONE]` at the end of a stream, the usage chunk when asked for. A chat request with
//! tools has each choice's text read for calls (`tool_calls` in the message or the deltas).

use axum::response::sse::Event;
use serde_json::Value;

use super::answer_format::{sse_event, AnswerFormat, ChoiceOutput, StreamStep};
use super::responses::Envelope;
use super::tool_calls::{answer_choice, finish_reason, piece_chunks, CallStream, ToolOutput};
use crate::engine::Usage;

pub struct CompletionsFormat {
    envelope: Envelope,
    /// `stream_options.include_usage`.
    include_usage: bool,
    want_logprobs: bool,
    /// Whether each choice has sent its first chunk.
    started: Vec<bool>,
    /// How the text is read for tool calls (`None`: it is not).
    tools: Option<ToolOutput>,
    /// Each choice's streamed text read for calls (empty without tools).
    calls: Vec<CallStream>,
}

impl CompletionsFormat {
    pub fn new(
        envelope: Envelope,
        n: usize,
        include_usage: bool,
        want_logprobs: bool,
        tools: Option<ToolOutput>,
    ) -> Self {
        let calls = match &tools {
            Some(tools) => (0..n).map(|_| tools.stream()).collect(),
            None => Vec::new(),
        };
        Self {
            envelope,
            include_usage,
            want_logprobs,
            started: vec![false; n],
            tools,
            calls,
        }
    }

    fn first(&mut self, index: usize) -> bool {
        !std::mem::replace(&mut self.started[index], true)
    }

    fn end(&self, usage: Option<&Usage>) -> Vec<Event> {
        let mut events = Vec::new();
        if let (true, Some(u)) = (self.include_usage, usage) {
            events.push(sse_event(None, &self.envelope.usage_chunk(u)));
        }
        events.push(Event::default().data("[DONE]"));
        events
    }
}

impl AnswerFormat for CompletionsFormat {
    fn step(&mut self, step: StreamStep<'_>) -> Vec<Event> {
        match step {
            StreamStep::Text {
                index,
                text,
                logprobs,
            } => {
                let lp = match (logprobs, self.want_logprobs) {
                    (Some(lp), true) => lp.to_json(self.envelope.endpoint),
                    _ => Value::Null,
                };
                let first = self.first(index);
                if let Some(calls) = self.calls.get_mut(index) {
                    let pieces = calls.push(text);
                    let chunks = piece_chunks(&self.envelope, index, pieces, first, lp, None);
                    return chunks.iter().map(|c| sse_event(None, c)).collect();
                }
                if text.is_empty() && !first && lp.is_null() {
                    return Vec::new();
                }
                let chunk = self.envelope.chunk(index, text, first, None, lp);
                vec![sse_event(None, &chunk)]
            }
            StreamStep::Finished {
                index,
                text,
                reason,
                ..
            } => {
                let first = self.first(index);
                if let Some(calls) = self.calls.get_mut(index) {
                    let pieces = calls.finish(text);
                    let reason = finish_reason(calls.called(), reason.as_str());
                    let chunks = piece_chunks(
                        &self.envelope,
                        index,
                        pieces,
                        first,
                        Value::Null,
                        Some(reason),
                    );
                    return chunks.iter().map(|c| sse_event(None, c)).collect();
                }
                let chunk =
                    self.envelope
                        .chunk(index, text, first, Some(reason.as_str()), Value::Null);
                vec![sse_event(None, &chunk)]
            }
            StreamStep::Done(usage) => self.end(Some(usage)),
            StreamStep::Failed(error) => {
                let mut events = vec![sse_event(None, &error.body())];
                events.extend(self.end(None));
                events
            }
        }
    }

    fn response(&self, choices: Vec<ChoiceOutput>, usage: &Usage) -> Value {
        let env = &self.envelope;
        let choices = choices
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let lp = if self.want_logprobs {
                    c.logprobs.to_json(env.endpoint)
                } else {
                    Value::Null
                };
                match &self.tools {
                    Some(tools) => answer_choice(env, i, tools, &c.text, c.finish.as_str(), lp),
                    None => env.choice(i, &c.text, c.finish.as_str(), lp),
                }
            })
            .collect();
        env.response(choices, usage)
    }
}
