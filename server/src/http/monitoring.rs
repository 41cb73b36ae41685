//! What monitoring asks: liveness and readiness (`/health`, `/ready`) and Prometheus metrics
//! (`/metrics`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::state::AppState;
use crate::metrics::ServedEngine;

/// Readiness, served at `/health` and `/ready` (the path routers probe): 200 only while the model
/// is loaded and the engine accepts work; 503 while loading, draining or after an engine failure.
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let unavailable = |body| (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    let Some(ready) = state.ready.get() else {
        return unavailable(json!({"status": "loading"}));
    };
    if let Some(panic) = ready.engine.failure() {
        return unavailable(json!({"status": "failed", "error": panic}));
    }
    if ready
        .engine
        .state()
        .draining
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return unavailable(json!({"status": "draining"}));
    }
    axum::Json(json!({"status": "ok"})).into_response()
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let ready = state.ready.get();
    let snapshot = ready.map(|r| r.engine.snapshot()).unwrap_or_default();
    let served = ServedEngine {
        model_name: &state.config.served_model_name,
        cache: ready.map(|r| (r.engine.limits().block_size, r.engine.limits().kv_blocks)),
    };
    let body = state.metrics.render(&snapshot, &served);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
