//! Runs a validated request on the engine and answers it, streamed (SSE) or whole, in the
//! shape of the API that was called (an [`AnswerFormat`]).

use std::convert::Infallible;
use std::sync::Arc;

use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::answer_format::{AnswerFormat, ChoiceOutput, StreamStep};
use super::error::ApiError;
use super::responses::{Endpoint, LogprobsBuilder};
use super::state::{AppState, Ready, ResolvedModel};
use crate::engine::{EngineEvent, GenerationRequest, SubmitError, TokenLogprobs, ValidRequest};

/// A request read from its body, before the engine's validation step, and how to answer it.
pub struct Prepared {
    pub request: GenerationRequest,
    pub answer: Answer,
}

/// How a request is answered.
pub struct Answer {
    pub resolved: ResolvedModel,
    pub stream: bool,
    pub n: usize,
    pub want_logprobs: bool,
    /// The API's shape of the answer.
    pub format: Box<dyn AnswerFormat>,
}

pub fn epas_object(resolved: &ResolvedModel) -> Value {
    json!({
        "sharing_ratio": resolved.ratio,
        "effective_sharing_ratio": resolved.plan.effective_ratio(),
        "sharing_layers": resolved.plan.sharing_layers(),
        "source_layer": resolved.plan.source_layer(),
    })
}

/// A unique id: `prefix` (with its separator) and random hex digits.
pub fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}{:016x}{:08x}",
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

/// Validates, submits and answers a prepared request; an error names its field as the API
/// that was called names it (`renames`: the shared checks' name, the API's).
pub async fn run(
    state: Arc<AppState>,
    prepared: Result<Prepared, ApiError>,
    renames: &[(&str, &str)],
) -> Response {
    let result = async {
        let prepared = prepared?;
        let ready = state.ready()?;
        let request = validate(ready, prepared.request).await?;
        let rx = submit(ready, request)?;
        respond(state.clone(), prepared.answer, rx).await
    }
    .await;
    result
        .map_err(|e| e.renamed(renames))
        .unwrap_or_else(IntoResponse::into_response)
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
    let tokenizer = state.ready()?.tokenizer.clone();
    let mut choices = vec![ChoiceOutput::default(); answer.n];
    while let Some(ev) = rx.recv().await {
        match ev {
            EngineEvent::Token {
                index,
                token,
                text,
                logprobs: lp,
            } => {
                choices[index].text.push_str(&text);
                if let Some(lp) = lp {
                    let (tok, top) = token_logprobs(&tokenizer, token, &lp);
                    choices[index].logprobs.push(tok, &lp, top);
                }
            }
            EngineEvent::Finished {
                index,
                reason,
                text,
                stop_sequence,
            } => {
                let choice = &mut choices[index];
                choice.text.push_str(&text);
                choice.finish = reason;
                choice.stop_sequence = stop_sequence;
            }
            EngineEvent::Done { usage } => {
                return Ok(axum::Json(answer.format.response(choices, &usage)));
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
    format: Box<dyn AnswerFormat>,
    want_logprobs: bool,
    queue: std::collections::VecDeque<Event>,
    done: bool,
}

impl StreamState {
    fn handle(&mut self, ev: EngineEvent) {
        let events = match ev {
            EngineEvent::Token {
                index,
                token,
                text,
                logprobs,
            } => {
                let logprobs = match (&logprobs, self.want_logprobs) {
                    (Some(lp), true) => {
                        let tokenizer = match self.state.ready.get() {
                            Some(r) => r.tokenizer.clone(),
                            None => return,
                        };
                        let (tok, top) = token_logprobs(&tokenizer, token, lp);
                        let mut b = LogprobsBuilder::default();
                        b.push(tok, lp, top);
                        Some(b)
                    }
                    _ => None,
                };
                self.format.step(StreamStep::Text {
                    index,
                    text: &text,
                    logprobs,
                })
            }
            EngineEvent::Finished {
                index,
                reason,
                text,
                stop_sequence,
            } => self.format.step(StreamStep::Finished {
                index,
                text: &text,
                reason,
                stop_sequence: stop_sequence.as_deref(),
            }),
            EngineEvent::Done { usage } => {
                self.done = true;
                self.format.step(StreamStep::Done(&usage))
            }
            EngineEvent::Error(failure) => {
                self.done = true;
                self.format
                    .step(StreamStep::Failed(&ApiError::from(failure)))
            }
        };
        self.queue.extend(events);
    }
}

fn sse_stream(
    state: Arc<AppState>,
    answer: Answer,
    rx: UnboundedReceiver<EngineEvent>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let mut format = answer.format;
    let s = StreamState {
        state,
        rx,
        want_logprobs: answer.want_logprobs,
        queue: format.opening().into(),
        format,
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
                    s.done = true;
                    let events = s.format.step(StreamStep::Failed(&err));
                    s.queue.extend(events);
                }
            }
        }
    })
}

pub fn endpoint_prefix(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Completion => "cmpl-",
        Endpoint::Chat => "chatcmpl-",
    }
}

/// Seconds since the Unix epoch (the `created` of responses).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
