//! What monitoring asks: liveness (`/health`) and Prometheus metrics (`/metrics`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::state::AppState;

/// Liveness and readiness: 200 only while requests can run.
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
    let snapshot = state
        .ready
        .get()
        .map(|r| r.engine.snapshot())
        .unwrap_or_default();
    let body = state.metrics.render(&snapshot);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
