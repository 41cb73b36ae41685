//! `GET /v1/models`: the served model and its EPAS facts.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::state::AppState;

pub async fn models(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let ready = state.ready()?;
    let c = &ready.info.config;
    let max = ready
        .info
        .max_sharing_ratio(state.config.allow_untrained_sharing);
    Ok(axum::Json(json!({
        "object": "list",
        "data": [{
            "id": state.config.served_model_name,
            "object": "model",
            "created": ready.created,
            "owned_by": "epas",
            "max_model_len": ready.max_model_len(),
            "epas": {
                "num_layers": c.num_layers,
                "max_sharing_ratio": max,
                "max_sharing_layers": epas_model::SharingPlan::new(c.num_layers, max).map(|p| p.sharing_layers()).unwrap_or(0),
                "trained_sharing_ratio": ready.info.epas.as_ref().map(|e| e.sharing_ratio),
                "default_sharing_ratio": state.config.default_sharing_ratio,
                "weights": ready.info.weight_format,
            },
        }],
    }))
    .into_response())
}
