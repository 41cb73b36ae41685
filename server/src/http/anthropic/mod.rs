//! Anthropic's Messages API: `POST /v1/messages` (answered whole or streamed) and
//! `POST /v1/messages/count_tokens`, through the same validation and engine as the OpenAI
//! routes, with this server's `sharing_ratio` (field or `NAME@RATIO` model alias).

mod conversation;
mod errors;
mod format;
mod request;
mod tools;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tool_use_tests;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::body::parse;
use super::error::ApiError;
use super::field_names::field_names;
use super::generation::{self, epas_object, new_id, Answer, Prepared};
use super::params::{generation_params, Limits};
use super::schema::{CommonParams, Stop};
use super::state::{AppState, Ready};
use super::tool_calls::ToolPlan;
use crate::engine::GenerationRequest;
use conversation::conversation;
use format::MessagesFormat;
use request::{Content, CountTokensRequest, InputMessage, MessagesRequest};
use tools::tool_request;

pub use errors::anthropic_errors;

/// The fields the shared parameter checks name otherwise.
const RENAMES: &[(&str, &str)] = &[("stop", "stop_sequences"), ("prompt", "messages")];

pub async fn messages(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let prepared = prepare(&state, &headers, &body);
    generation::run(state.clone(), prepared, RENAMES).await
}

pub async fn count_tokens(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match input_tokens(&state, &headers, &body) {
        Ok(count) => axum::Json(json!({"input_tokens": count})).into_response(),
        Err(e) => e.renamed(RENAMES).into_response(),
    }
}

/// The length of the prompt a `count_tokens` body would give `/v1/messages`.
fn input_tokens(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<usize, ApiError> {
    let req: CountTokensRequest = parse(headers, body, &[field_names::<CountTokensRequest>()])?;
    let tools = tool_request(req.tools.as_deref(), req.tool_choice.as_ref())?;
    let ready = state.ready()?;
    state.resolve(ready, req.model.as_deref(), None)?;
    let tools = ToolPlan::new(tools, &ready.tokenizer);
    Ok(prompt_tokens(ready, &tools, req.system.as_ref(), &req.messages)?.len())
}

fn prepare(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<Prepared, ApiError> {
    let req: MessagesRequest = parse(headers, body, &[field_names::<MessagesRequest>()])?;
    let tools = tool_request(req.tools.as_deref(), req.tool_choice.as_ref())?;
    let max_tokens = req
        .max_tokens
        .ok_or_else(|| ApiError::invalid("max_tokens", "required"))?;
    if let Some(t) = req.temperature.filter(|t| !(0.0..=1.0).contains(t)) {
        return Err(ApiError::invalid(
            "temperature",
            format!("must be between 0 and 1, got {t}"),
        ));
    }
    let ready = state.ready()?;
    let resolved = state.resolve(ready, req.model.as_deref(), req.sharing_ratio)?;
    let tools = ToolPlan::new(tools, &ready.tokenizer);
    let constraint = tools.constraint(None)?;
    let prompt = prompt_tokens(ready, &tools, req.system.as_ref(), &req.messages)?;
    let common = CommonParams {
        model: req.model.clone(),
        max_tokens: Some(max_tokens),
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        stream: req.stream,
        stop: req.stop_sequences.clone().map(Stop::Many),
        sharing_ratio: req.sharing_ratio,
        ..Default::default()
    };
    let limits = Limits {
        room: ready.engine.limits().room(&resolved.plan, prompt.len()),
        vocab: ready.info.config.vocab_size,
        max_tokens: Some(max_tokens),
        default_max_tokens: 0,
        logprobs: None,
    };
    let params = generation_params(&common, &state.config, limits)?;
    let model = req
        .model
        .unwrap_or_else(|| state.config.served_model_name.clone());
    let format = MessagesFormat::new(
        new_id("msg_"),
        model,
        epas_object(&resolved),
        prompt.len(),
        tools.output().map(|o| o.with_id_prefix("toolu_")),
    );
    Ok(Prepared {
        request: GenerationRequest {
            prompt,
            plan: resolved.plan,
            params,
            constraint,
        },
        answer: Answer {
            resolved,
            stream: req.stream,
            n: 1,
            want_logprobs: false,
            format: Box::new(format),
        },
    })
}

/// The token ids of the rendered conversation (with the tools shown to the model), ending with
/// the prefill if there is one.
fn prompt_tokens(
    ready: &Ready,
    tools: &ToolPlan,
    system: Option<&Content>,
    messages: &[InputMessage],
) -> Result<Vec<u32>, ApiError> {
    let conversation = conversation(system, messages)?;
    let mut text = tools.prompt(&ready.tokenizer, &conversation.turns, true)?;
    if let Some(prefill) = &conversation.prefill {
        text.push_str(prefill);
    }
    ready
        .tokenizer
        .encode(&text)
        .map_err(|e| ApiError::invalid("messages", e.to_string()))
}
