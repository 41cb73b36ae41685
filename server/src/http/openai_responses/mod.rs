//! OpenAI's Responses API: `POST /v1/responses`, answered whole or streamed, through the same
//! validation and engine as the other routes, with `text.format` output constraints and this
//! server's `sharing_ratio` (field or `NAME@RATIO` model alias). Nothing is stored:
//! `previous_response_id` is refused (see README).

mod format;
mod input;
mod request;
mod text_format;
mod tools;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::body::parse;
use super::error::ApiError;
use super::field_names::field_names;
use super::generation::{self, epas_object, new_id, unix_now, Answer, Prepared};
use super::params::{generation_params, Limits};
use super::schema::CommonParams;
use super::state::AppState;
use super::tool_calls::ToolPlan;
use crate::engine::GenerationRequest;
use format::ResponsesFormat;
use input::conversation;
use request::ResponsesRequest;
use text_format::text_constraint;
use tools::{echoed, tool_request};

/// The fields the shared checks name otherwise.
const RENAMES: &[(&str, &str)] = &[
    ("max_tokens", "max_output_tokens"),
    ("prompt", "input"),
    ("messages", "input"),
];

/// `max_output_tokens` when the request gives none (clipped to what the context leaves), as
/// chat's default `max_tokens`.
const DEFAULT_MAX_OUTPUT_TOKENS: usize = 1024;

pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let prepared = prepare(&state, &headers, &body);
    generation::run(state.clone(), prepared, RENAMES).await
}

fn prepare(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<Prepared, ApiError> {
    let req: ResponsesRequest = parse(headers, body, &[field_names::<ResponsesRequest>()])?;
    let tools = tool_request(
        req.tools.as_deref(),
        req.tool_choice.as_ref(),
        req.parallel_tool_calls,
    )?;
    if req.previous_response_id.is_some() {
        return Err(ApiError::invalid(
            "previous_response_id",
            "previous_response_id is not supported: this server stores no responses; send the \
             conversation in `input`",
        ));
    }
    let text_format = text_constraint(req.text.as_ref())?;
    let metadata = metadata(req.metadata.as_ref())?;
    let input = req
        .input
        .as_ref()
        .ok_or_else(|| ApiError::invalid("input", "`input` is required"))?;
    let turns = conversation(req.instructions.as_deref(), input)?;
    let ready = state.ready()?;
    let resolved = state.resolve(ready, req.model.as_deref(), req.sharing_ratio)?;
    let (echoed_tools, echoed_choice) = echoed(tools.as_ref(), req.tool_choice.as_ref());
    let tools = ToolPlan::new(tools, &ready.tokenizer);
    let constraint = tools.constraint(text_format)?;
    let text = tools.prompt(&ready.tokenizer, &turns, true)?;
    let prompt = ready
        .tokenizer
        .encode(&text)
        .map_err(|e| ApiError::invalid("input", e.to_string()))?;
    let common = CommonParams {
        model: req.model.clone(),
        max_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stream: req.stream,
        sharing_ratio: req.sharing_ratio,
        ..Default::default()
    };
    let limits = Limits {
        room: ready.engine.limits().room(&resolved.plan, prompt.len()),
        vocab: ready.info.config.vocab_size,
        max_tokens: req.max_output_tokens,
        default_max_tokens: DEFAULT_MAX_OUTPUT_TOKENS,
        logprobs: None,
    };
    let params = generation_params(&common, &state.config, limits)?;
    let model = req
        .model
        .clone()
        .unwrap_or_else(|| state.config.served_model_name.clone());
    let fixed = json!({
        "model": model,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "temperature": req.temperature.unwrap_or(1.0),
        "top_p": req.top_p.unwrap_or(1.0),
        "metadata": metadata,
        "parallel_tool_calls": req.parallel_tool_calls.unwrap_or(true),
        "tools": echoed_tools,
        "tool_choice": echoed_choice,
        "text": req.text.clone().filter(|t| !t.is_null()).unwrap_or(json!({"format": {"type": "text"}})),
        "epas": epas_object(&resolved),
    });
    let format = ResponsesFormat::new(
        new_id("resp_"),
        new_id("msg_"),
        unix_now(),
        fixed,
        tools.output(),
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

/// `metadata`: an object of string values, returned as given (`{}` when absent).
fn metadata(value: Option<&Value>) -> Result<Map<String, Value>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => match map.iter().find(|(_, v)| !v.is_string()) {
            Some((key, _)) => Err(ApiError::invalid(
                format!("metadata.{key}"),
                "metadata values must be strings",
            )),
            None => Ok(map.clone()),
        },
        Some(_) => Err(ApiError::invalid(
            "metadata",
            "metadata must be an object of strings",
        )),
    }
}
