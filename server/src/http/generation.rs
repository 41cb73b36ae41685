//! Runs a validated request on the engine and answers it, streamed (SSE) or whole.

use std::convert::Infallible;
use std::sync::Arc;

use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::error::ApiError;
use super::responses::{Endpoint, Envelope, LogprobsBuilder};
use super::state::{AppState, Ready, ResolvedModel};
use super::tool_calls::{answer_choice, finish_reason, piece_chunks, CallStream, ToolOutput};
use crate::engine::{
    EngineEvent, GenerationRequest, SubmitError, TokenLogprobs, Usage, ValidRequest,
};

/// A request read from its body, before the engine's validation step, and how to answer it.
pub struct Prepared {
    pub request: GenerationRequest,
    pub answer: Answer,
}

/// The shape of a request's answer.
pub struct Answer {
    pub resolved: ResolvedModel,
    pub stream: bool,
    pub include_usage: bool,
    pub envelope: Envelope,
    pub n: usize,
    pub want_logprobs: bool,
    /// How each choice's text is read for tool calls (`None`: it is not).
    pub tools: Option<ToolOutput>,
}

pub fn epas_object(resolved: &ResolvedModel) -> Value {
    json!({
        "sharing_ratio": resolved.ratio,
        "effective_sharing_ratio": resolved.plan.effective_ratio(),
        "sharing_layers": resolved.plan.sharing_layers(),
        "source_layer": resolved.plan.source_layer(),
    })
}

pub fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}-{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

/// The engine's validation step. Compiling an output constraint can take milliseconds, so a
/// constrained request is validated on a blocking thread, not the async runtime's.
pub async fn validate(ready: &Ready, request: GenerationRequest) -> Result<ValidRequest, ApiError> {
    if request.constraint.is_none() {
        return Ok(ready.engine.validate(request)?);
    }
    let engine = ready.engine.clone();
    tokio::task::spawn_blocking(move || engine.validate(request))
        .await
        .map_err(|e| ApiError::internal(format!("validating the request: {e}")))?
        .map_err(ApiError::from)
}

/// Hands the request to the engine; a refusal becomes its HTTP error (counted by the layer
/// that counts every generation request).
pub fn submit(
    ready: &Ready,
    request: ValidRequest,
) -> Result<UnboundedReceiver<EngineEvent>, ApiError> {
    ready.engine.submit(request).map_err(|e| match &e {
        SubmitError::Overloaded { .. } => ApiError::overloaded(e.to_string()),
        SubmitError::Draining => ApiError::draining(),
        SubmitError::Stopped => {
            ApiError::engine_failed(ready.engine.failure().unwrap_or("the engine has stopped"))
        }
    })
}

fn with_epas_headers(mut response: Response, resolved: &ResolvedModel) -> Response {
    let h = response.headers_mut();
    h.insert(
        "x-epas-sharing-layers",
        HeaderValue::from(resolved.plan.sharing_layers()),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("{}", resolved.ratio)) {
        h.insert("x-epas-sharing-ratio", v);
    }
    response
}

fn token_logprobs(
    tokenizer: &epas_model::TextTokenizer,
    token: u32,
    lp: &TokenLogprobs,
) -> (String, Vec<(String, f32)>) {
    let text = |id: u32| tokenizer.decode(&[id], false).unwrap_or_default();
    (
        text(token),
        lp.top.iter().map(|&(id, l)| (text(id), l)).collect(),
    )
}

/// Answers a request once the engine accepted it.
pub async fn respond(
    state: Arc<AppState>,
    answer: Answer,
    rx: UnboundedReceiver<EngineEvent>,
) -> Result<Response, ApiError> {
    let resolved = answer.resolved;
    let response = if answer.stream {
        let stream = sse_stream(state.clone(), answer, rx);
        Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response()
    } else {
        collect(&state, answer, rx).await?.into_response()
    };
    Ok(with_epas_headers(response, &resolved))
}

async fn collect(
    state: &AppState,
    answer: Answer,
    mut rx: UnboundedReceiver<EngineEvent>,
) -> Result<axum::Json<Value>, ApiError> {
    let n = answer.n;
    let tokenizer = state.ready()?.tokenizer.clone();
    let mut texts = vec![String::new(); n];
    let mut finish = vec!["length"; n];
    let mut logprobs = vec![LogprobsBuilder::default(); n];
    let want_logprobs = answer.want_logprobs;
    let env = &answer.envelope;
    while let Some(ev) = rx.recv().await {
        match ev {
            EngineEvent::Token {
                index,
                token,
                text,
                logprobs: lp,
            } => {
                texts[index].push_str(&text);
                if let Some(lp) = lp {
                    let (tok, top) = token_logprobs(&tokenizer, token, &lp);
                    logprobs[index].push(tok, &lp, top);
                }
            }
            EngineEvent::Finished {
                index,
                reason,
                text,
            } => {
                texts[index].push_str(&text);
                finish[index] = reason.as_str();
            }
            EngineEvent::Done { usage } => {
                let choices = (0..n)
                    .map(|i| {
                        let lp = if want_logprobs {
                            logprobs[i].to_json(env.endpoint)
                        } else {
                            Value::Null
                        };
                        match &answer.tools {
                            Some(tools) => answer_choice(env, i, tools, &texts[i], finish[i], lp),
                            None => env.choice(i, &texts[i], finish[i], lp),
                        }
                    })
                    .collect();
                return Ok(axum::Json(env.response(choices, &usage)));
            }
            EngineEvent::Error(failure) => return Err(ApiError::from(failure)),
        }
    }
    Err(ApiError::internal(
        "the engine stopped before the request finished",
    ))
}

struct StreamState {
    state: Arc<AppState>,
    rx: UnboundedReceiver<EngineEvent>,
    envelope: Envelope,
    include_usage: bool,
    want_logprobs: bool,
    started: Vec<bool>,
    /// Each choice's text read for tool calls (empty when the request has no tools).
    calls: Vec<CallStream>,
    queue: std::collections::VecDeque<Event>,
    done: bool,
}

fn data(value: &Value) -> Event {
    Event::default().data(value.to_string())
}

impl StreamState {
    fn first(&mut self, index: usize) -> bool {
        !std::mem::replace(&mut self.started[index], true)
    }

    fn handle(&mut self, ev: EngineEvent) {
        match ev {
            EngineEvent::Token {
                index,
                token,
                text,
                logprobs,
            } => {
                let lp = match (&logprobs, self.want_logprobs) {
                    (Some(lp), true) => {
                        let tokenizer = match self.state.ready.get() {
                            Some(r) => r.tokenizer.clone(),
                            None => return,
                        };
                        let (tok, top) = token_logprobs(&tokenizer, token, lp);
                        let mut b = LogprobsBuilder::default();
                        b.push(tok, lp, top);
                        b.to_json(self.envelope.endpoint)
                    }
                    _ => Value::Null,
                };
                let first = self.first(index);
                if let Some(calls) = self.calls.get_mut(index) {
                    let pieces = calls.push(&text);
                    let chunks = piece_chunks(&self.envelope, index, pieces, first, lp, None);
                    self.queue.extend(chunks.iter().map(data));
                } else if !text.is_empty() || first || !lp.is_null() {
                    let chunk = self.envelope.chunk(index, &text, first, None, lp);
                    self.queue.push_back(data(&chunk));
                }
            }
            EngineEvent::Finished {
                index,
                reason,
                text,
            } => {
                let first = self.first(index);
                if let Some(calls) = self.calls.get_mut(index) {
                    let pieces = calls.finish(&text);
                    let reason = finish_reason(calls.called(), reason.as_str());
                    let chunks = piece_chunks(
                        &self.envelope,
                        index,
                        pieces,
                        first,
                        Value::Null,
                        Some(reason),
                    );
                    self.queue.extend(chunks.iter().map(data));
                } else {
                    let chunk = self.envelope.chunk(
                        index,
                        &text,
                        first,
                        Some(reason.as_str()),
                        Value::Null,
                    );
                    self.queue.push_back(data(&chunk));
                }
            }
            EngineEvent::Done { usage } => self.finish(Some(usage)),
            EngineEvent::Error(failure) => {
                let err = ApiError::from(failure);
                self.queue.push_back(data(&err.body()));
                self.finish(None);
            }
        }
    }

    fn finish(&mut self, usage: Option<Usage>) {
        if let (true, Some(u)) = (self.include_usage, usage) {
            self.queue.push_back(data(&self.envelope.usage_chunk(&u)));
        }
        self.queue.push_back(Event::default().data("[DONE]"));
        self.done = true;
    }
}

fn sse_stream(
    state: Arc<AppState>,
    answer: Answer,
    rx: UnboundedReceiver<EngineEvent>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let s = StreamState {
        state,
        rx,
        want_logprobs: answer.want_logprobs,
        envelope: answer.envelope,
        include_usage: answer.include_usage,
        started: vec![false; answer.n],
        calls: match &answer.tools {
            Some(tools) => (0..answer.n).map(|_| tools.stream()).collect(),
            None => Vec::new(),
        },
        queue: Default::default(),
        done: false,
    };
    stream::unfold(s, |mut s| async move {
        loop {
            if let Some(ev) = s.queue.pop_front() {
                return Some((Ok(ev), s));
            }
            if s.done {
                return None;
            }
            match s.rx.recv().await {
                Some(ev) => s.handle(ev),
                None => {
                    let err = ApiError::internal("the engine stopped before the request finished");
                    s.queue.push_back(data(&err.body()));
                    s.finish(None);
                }
            }
        }
    })
}

pub fn endpoint_prefix(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Completion => "cmpl",
        Endpoint::Chat => "chatcmpl",
    }
}
