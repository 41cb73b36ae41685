//! The playground page (`static/`, compiled into the binary) and `GET /info`, the model facts
//! it shows: layers, maximum ratios, the sharing plan of every ratio, whether a key is needed.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use epas_model::SharingPlan;
use serde_json::{json, Value};

use super::state::AppState;

const INDEX_HTML: &str = include_str!("../../../static/index.html");
const PLAYGROUND_JS: &str = include_str!("../../../static/playground.js");
const PLAYGROUND_CSS: &str = include_str!("../../../static/playground.css");

/// The page loads nothing but these files and talks only to this server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

pub async fn index() -> Response {
    let mut response = asset("text/html; charset=utf-8", INDEX_HTML);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", PLAYGROUND_JS)
}

pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", PLAYGROUND_CSS)
}

/// `GET /info`, no authentication needed to ask. Without a valid key (when the server has
/// keys) it says only that one is required; with one, or on an open server, it describes the
/// model and the plan of every number of sharing layers `k` (ratio `k / L`).
pub async fn info(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let api_key_required = !state.config.api_keys.is_empty();
    let authorized = super::authorized(&state, &headers);
    let status = match state.ready.get() {
        None => "loading",
        Some(r)
            if r.engine
                .state()
                .draining
                .load(std::sync::atomic::Ordering::Relaxed) =>
        {
            "draining"
        }
        Some(_) => "ok",
    };
    let mut out = json!({
        "status": status,
        "api_key_required": api_key_required,
        "authorized": authorized,
    });
    if let (true, Some(ready)) = (authorized, state.ready.get()) {
        let info = &ready.info;
        let c = &info.config;
        let kv_dtype = ready.engine.config().kv_dtype;
        let l = c.num_layers;
        let allow = state.config.allow_untrained_sharing;
        let max_ratio = info.max_sharing_ratio(allow);
        let max_k = SharingPlan::new(l, max_ratio)
            .map(|p| p.sharing_layers())
            .unwrap_or(0);
        let trained_k = info.epas.as_ref().map(|e| e.sharing_layers);
        let plans: Vec<Value> = (0..l)
            .filter_map(|k| SharingPlan::with_sharing_layers(l, k).ok())
            .map(|p| {
                let k = p.sharing_layers();
                json!({
                    "sharing_layers": k,
                    "sharing_ratio": p.effective_ratio(),
                    "source_layer": p.source_layer(),
                    "first_sharing_layer": p.first_sharing_layer(),
                    "kv_cache_bytes_per_token": epas_model::kv_bytes_per_token(c, &p, kv_dtype),
                    "allowed": k <= max_k,
                    "trained": k == 0 || trained_k.is_some_and(|t| k <= t),
                })
            })
            .collect();
        let model = json!({
            "id": state.config.served_model_name,
            "num_layers": l,
            "hidden_size": c.hidden_size,
            "weights": info.weight_format,
            "max_model_len": ready.max_model_len(),
            "epas_trained": info.epas.is_some(),
            "trained_sharing_ratio": info.epas.as_ref().map(|e| e.sharing_ratio),
            "trained_sharing_layers": trained_k,
            "allow_untrained_sharing": allow,
            "max_sharing_ratio": max_ratio,
            "max_sharing_layers": max_k,
            "default_sharing_ratio": state.config.default_sharing_ratio,
            "plans": plans,
        });
        out["model"] = model;
    }
    let mut response = axum::Json(out).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
