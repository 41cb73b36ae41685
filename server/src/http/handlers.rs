//! The generation endpoints: `/v1/completions` and `/v1/chat/completions`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::body::{parse_object, typed};
use super::chat_messages::chat_messages;
use super::completions_format::CompletionsFormat;
use super::error::ApiError;
use super::field_names::field_names;
use super::generation::{self, endpoint_prefix, epas_object, new_id, unix_now, Answer, Prepared};
use super::params::{generation_params, Limits};
use super::responses::{Endpoint, Envelope};
use super::schema::*;
use super::state::{AppState, ResolvedModel};
use super::structured_params::StructuredParams;
use super::tool_calls::{ToolOutput, ToolParams, ToolPlan};
use crate::engine::{GenerationParams, GenerationRequest, RequestConstraint};

/// What a request generates, besides its sampling parameters.
struct Output {
    prompt: Vec<u32>,
    constraint: Option<RequestConstraint>,
    /// How a chat answer is read for tool calls.
    tools: Option<ToolOutput>,
}

/// The request the engine will validate, and the shape of its answer.
fn prepared(
    state: &AppState,
    endpoint: Endpoint,
    common: &CommonParams,
    output: Output,
    resolved: ResolvedModel,
    params: GenerationParams,
) -> Prepared {
    let include_usage = common
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage);
    let want_logprobs = params.sampling.logprobs.is_some();
    let envelope = envelope(endpoint, &common.model, state, epas_object(&resolved));
    let answer = Answer {
        stream: common.stream,
        format: Box::new(CompletionsFormat::new(
            envelope,
            params.n,
            include_usage,
            want_logprobs,
            output.tools,
        )),
        n: params.n,
        want_logprobs,
        resolved,
    };
    let request = GenerationRequest {
        prompt: output.prompt,
        plan: resolved.plan,
        params,
        constraint: output.constraint,
    };
    Prepared { request, answer }
}

fn envelope(
    endpoint: Endpoint,
    model: &Option<String>,
    state: &AppState,
    epas: serde_json::Value,
) -> Envelope {
    Envelope {
        id: new_id(endpoint_prefix(endpoint)),
        created: unix_now(),
        model: model
            .clone()
            .unwrap_or_else(|| state.config.served_model_name.clone()),
        endpoint,
        epas,
    }
}

pub async fn completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let prepared = prepare_completion(&state, &headers, &body);
    generation::run(state.clone(), prepared, &[]).await
}

fn prepare_completion(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Prepared, ApiError> {
    let value = parse_object(
        headers,
        body,
        &[
            field_names::<CommonParams>(),
            field_names::<CompletionRequest>(),
            field_names::<StructuredParams>(),
        ],
    )?;
    let common: CommonParams = typed(&value)?;
    let structured: StructuredParams = typed(&value)?;
    let req: CompletionRequest = typed(&value)?;
    let ready = state.ready()?;
    if req.echo {
        return Err(ApiError::invalid("echo", "echo is not supported"));
    }
    if req.suffix.is_some() {
        return Err(ApiError::invalid("suffix", "suffix is not supported"));
    }
    if let Some(b) = req.best_of {
        if b != 1 && Some(b) != common.n {
            return Err(ApiError::invalid(
                "best_of",
                "best_of other than n is not supported",
            ));
        }
    }
    let resolved = state.resolve(ready, common.model.as_deref(), common.sharing_ratio)?;
    let ids = match &req.prompt {
        Prompt::Text(t) => ready
            .tokenizer
            .encode(t)
            .map_err(|e| ApiError::invalid("prompt", e.to_string()))?,
        Prompt::Texts(v) if v.len() == 1 => ready
            .tokenizer
            .encode(&v[0])
            .map_err(|e| ApiError::invalid("prompt", e.to_string()))?,
        Prompt::Texts(_) => {
            return Err(ApiError::invalid(
                "prompt",
                "send exactly one prompt per request",
            ))
        }
        Prompt::Tokens(ids) => ids.clone(),
    };
    let logprobs = match req.logprobs {
        None => None,
        Some(l) if l >= 0 => Some(l as usize),
        Some(l) => {
            return Err(ApiError::invalid(
                "logprobs",
                format!("logprobs must be 0 or more, got {l}"),
            ))
        }
    };
    let limits = Limits {
        room: ready.engine.limits().room(&resolved.plan, ids.len()),
        vocab: ready.info.config.vocab_size,
        max_tokens: common.max_tokens,
        default_max_tokens: 16,
        logprobs,
    };
    let params = generation_params(&common, &state.config, limits)?;
    let output = Output {
        prompt: ids,
        constraint: structured.constraint()?,
        tools: None,
    };
    Ok(prepared(
        state,
        Endpoint::Completion,
        &common,
        output,
        resolved,
        params,
    ))
}

pub async fn chat(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let prepared = prepare_chat(&state, &headers, &body);
    generation::run(state.clone(), prepared, &[]).await
}

fn prepare_chat(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<Prepared, ApiError> {
    let value = parse_object(
        headers,
        body,
        &[
            field_names::<CommonParams>(),
            field_names::<ChatRequest>(),
            field_names::<StructuredParams>(),
            field_names::<ToolParams>(),
        ],
    )?;
    let common: CommonParams = typed(&value)?;
    let structured: StructuredParams = typed(&value)?;
    let req: ChatRequest = typed(&value)?;
    let tool_params: ToolParams = typed(&value)?;
    let ready = state.ready()?;
    let tools = ToolPlan::new(tool_params.request()?, &ready.tokenizer);
    let constraint = tools.constraint(structured.constraint()?)?;
    let resolved = state.resolve(ready, common.model.as_deref(), common.sharing_ratio)?;
    let turns = chat_messages(&req.messages)?;
    let text = tools.prompt(&ready.tokenizer, &turns, true)?;
    let ids = ready
        .tokenizer
        .encode(&text)
        .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    let logprobs = match (req.logprobs, req.top_logprobs) {
        (false, Some(_)) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                "top_logprobs needs logprobs: true",
            ))
        }
        (false, None) => None,
        (true, None) => Some(0),
        (true, Some(t)) if t >= 0 => Some(t as usize),
        (true, Some(t)) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                format!("top_logprobs must be 0 or more, got {t}"),
            ))
        }
    };
    let max_tokens = match (common.max_tokens, req.max_completion_tokens) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid(
                "max_completion_tokens",
                "max_tokens and max_completion_tokens differ",
            ))
        }
        (a, b) => a.or(b),
    };
    let limits = Limits {
        room: ready.engine.limits().room(&resolved.plan, ids.len()),
        vocab: ready.info.config.vocab_size,
        max_tokens,
        default_max_tokens: 1024,
        logprobs,
    };
    let params = generation_params(&common, &state.config, limits)?;
    let output = Output {
        prompt: ids,
        constraint,
        tools: tools.output(),
    };
    Ok(prepared(
        state,
        Endpoint::Chat,
        &common,
        output,
        resolved,
        params,
    ))
}
