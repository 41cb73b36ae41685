//! The seam between the engine's events and an API's answer: the event loop in `generation`
//! is the same for every API, and an [`AnswerFormat`] writes what each API's clients read.

use axum::response::sse::Event;
use serde_json::Value;

use super::error::ApiError;
use super::responses::LogprobsBuilder;
use crate::engine::{FinishReason, Usage};

/// One choice's output once its request finished.
#[derive(Debug, Clone)]
pub struct ChoiceOutput {
    pub text: String,
    pub finish: FinishReason,
    /// The stop string that ended the choice, if one did.
    pub stop_sequence: Option<String>,
    /// Filled only when the request asked for log-probabilities.
    pub logprobs: LogprobsBuilder,
}

impl Default for ChoiceOutput {
    fn default() -> Self {
        Self {
            text: String::new(),
            finish: FinishReason::Length,
            stop_sequence: None,
            logprobs: LogprobsBuilder::default(),
        }
    }
}

/// What a streamed request's engine did next.
pub enum StreamStep<'a> {
    /// Text that became final (may be empty: a token whose text is held back).
    Text {
        index: usize,
        text: &'a str,
        /// The token's log-probabilities, when the request asked for them.
        logprobs: Option<LogprobsBuilder>,
    },
    /// A choice ended, with the text held back until then.
    Finished {
        index: usize,
        text: &'a str,
        reason: FinishReason,
        stop_sequence: Option<&'a str>,
    },
    /// Every choice ended; the stream ends after this step's events.
    Done(&'a Usage),
    /// The request failed; the stream ends after this step's events.
    Failed(&'a ApiError),
}

/// How one API answers a request, whole or as server-sent events.
pub trait AnswerFormat: Send + 'static {
    /// Events sent when the stream opens, before the engine's first event.
    fn opening(&mut self) -> Vec<Event> {
        Vec::new()
    }

    /// The events one step of a streamed request becomes.
    fn step(&mut self, step: StreamStep<'_>) -> Vec<Event>;

    /// The body of a request answered whole.
    fn response(&self, choices: Vec<ChoiceOutput>, usage: &Usage) -> Value;
}

/// An SSE event whose data is `value`, named `name` where the API names its events (the
/// `event:` line first, as those APIs send it).
pub fn sse_event(name: Option<&str>, value: &Value) -> Event {
    let event = match name {
        Some(name) => Event::default().event(name),
        None => Event::default(),
    };
    event.data(value.to_string())
}
