//! The OpenAI-compatible HTTP server (axum): routes, authentication, limits, graceful drain.

mod answer_format;
mod anthropic;
mod body;
mod chat_messages;
mod completions_format;
mod conversation;
mod error;
mod field_names;
mod generation;
mod handlers;
mod model_list;
mod monitoring;
mod openai_responses;
mod params;
mod playground;
mod request_counting;
mod responses;
mod schema;
mod shutdown;
mod state;
mod structured_params;
mod tokenizer_routes;
mod tool_calls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use epas_model::{EpasLlama, TextTokenizer};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use state::{AppState, HttpConfig, Ready};

pub(crate) use request_counting::REFUSAL_REASONS;

use crate::engine::{EngineConfig, EngineHandle};
use crate::metrics::Metrics;
use shutdown::{engine_idle, ShutdownSignals};

/// Everything `epas serve` configures.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub http: HttpConfig,
    pub engine: EngineConfig,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// The least time the drain keeps the listener open (within `shutdown_timeout`).
    pub drain_grace: Duration,
    /// Origins allowed by CORS; `["*"]` allows any.
    pub cors_origins: Vec<String>,
}

#[derive(Clone, Default)]
struct RequestIds(Arc<AtomicU64>);

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("req-{n:08x}"))
            .ok()
            .map(RequestId::new)
    }
}

/// Whether `headers` carry an accepted key, as a bearer token (OpenAI's clients) or in
/// `x-api-key` (Anthropic's); always true when the server has none.
fn authorized(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
    if state.config.api_keys.is_empty() {
        return true;
    }
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let bearer =
        header(axum::http::header::AUTHORIZATION.as_str()).and_then(|v| v.strip_prefix("Bearer "));
    let accepted =
        |key: Option<&str>| key.is_some_and(|key| state.config.api_keys.iter().any(|k| k == key));
    accepted(bearer) || accepted(header("x-api-key"))
}

async fn auth(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if authorized(&state, request.headers()) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// Maps axum's own body errors (too large, unreadable) to the OpenAI error shape.
async fn body_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE
        && response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_none_or(|v| v != "application/json")
    {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "the request body is too large",
        )
        .into_response();
    }
    if response.status() == StatusCode::REQUEST_TIMEOUT {
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request took too long",
        )
        .into_response();
    }
    response
}

pub fn router(state: Arc<AppState>, config: &ServerConfig) -> Router {
    let protected = Router::new()
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/chat/completions", post(handlers::chat))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/responses", post(openai_responses::create))
        .route("/v1/models", get(model_list::models))
        .route("/tokenize", post(tokenizer_routes::tokenize))
        .route("/detokenize", post(tokenizer_routes::detokenize))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    let cors = if config.cors_origins.iter().any(|o| o == "*") {
        CorsLayer::new()
            .allow_origin(Any)
            .allow_headers(Any)
            .allow_methods(Any)
    } else {
        let origins: Vec<HeaderValue> = config
            .cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_headers(Any)
            .allow_methods(Any)
    };
    Router::new()
        .merge(protected)
        .route("/health", get(monitoring::health))
        .route("/ready", get(monitoring::health))
        .route("/metrics", get(monitoring::metrics))
        .route("/", get(playground::index))
        .route("/static/playground.js", get(playground::script))
        .route("/static/playground.css", get(playground::stylesheet))
        .route("/info", get(playground::info))
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, config.request_timeout))
        .layer(middleware::from_fn(body_errors))
        .layer(middleware::from_fn(anthropic::anthropic_errors))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            request_counting::count_generation_requests,
        ))
        .layer(cors)
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path())
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(RequestIds::default()))
}

/// Binds, answers `/health` with 503 while `load` runs, then serves until SIGTERM or Ctrl-C.
/// The drain that follows keeps the listener open (new generations and `/health` get 503)
/// until the engine has finished its work, then lets the open responses end, all within
/// `shutdown_timeout`. A second signal during the drain ends it at once with an error.
pub async fn serve<L>(config: ServerConfig, load: L) -> Result<(), ServeError>
where
    L: FnOnce() -> Result<(EpasLlama, TextTokenizer), String> + Send + 'static,
{
    let mut signals =
        ShutdownSignals::listen().map_err(|e| format!("cannot listen for signals: {e}"))?;
    let metrics = Arc::new(Metrics::new().map_err(|e| e.to_string())?);
    let state = Arc::new(AppState {
        config: config.http.clone(),
        metrics: metrics.clone(),
        ready: std::sync::OnceLock::new(),
    });
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(address = %local, "listening (model loading)");
    let app = router(state.clone(), &config);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut graceful_rx = stop_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service())
            .with_graceful_shutdown(async move {
                let _ = graceful_rx.wait_for(|s| *s).await;
            })
            .await
    });

    let engine_config = config.engine.clone();
    let kv_dtype = engine_config.kv_dtype;
    let loader_state = state.clone();
    let allow_untrained_sharing = config.http.allow_untrained_sharing;
    let loaded = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let (model, tokenizer) = load()?;
        let info = model.info.clone();
        let tokenizer = Arc::new(tokenizer);
        // Only ratios this server serves get series: a refused ratio never has traffic.
        for ratio in [0.0, 0.25, 0.5, 0.75] {
            if let Ok(plan) = info.plan(ratio, allow_untrained_sharing) {
                let bytes = epas_model::kv_bytes_per_token(&info.config, &plan, kv_dtype);
                metrics.init_ratio(plan.effective_ratio(), bytes);
            }
        }
        let engine =
            EngineHandle::start(Arc::new(model), tokenizer.clone(), engine_config, metrics)?;
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let _ = loader_state.ready.set(Ready {
            engine,
            tokenizer,
            info,
            created,
        });
        Ok(())
    });
    tokio::select! {
        result = loaded => {
            result.map_err(|e| e.to_string())??;
            tracing::info!(address = %local, "ready");
        }
        _ = signals.next() => {
            tracing::info!("shutdown requested while loading");
            let _ = stop_tx.send(true);
            return Ok(());
        }
    }
    signals.next().await;
    let started = tokio::time::Instant::now();
    let deadline = started + config.shutdown_timeout;
    let grace_end = started + config.drain_grace.min(config.shutdown_timeout);
    tracing::info!("shutting down: refusing new requests, finishing running ones");
    let drain = async {
        if let Some(ready) = state.ready.get() {
            ready.engine.drain();
            if tokio::time::timeout_at(deadline, engine_idle(&ready.engine))
                .await
                .is_err()
            {
                tracing::warn!("shutdown timeout reached with requests still running");
            }
        }
        // Routers poll `/ready`: the port stays open, answering 503, until they have seen it.
        tokio::time::sleep_until(grace_end).await;
        // Closes the listener; the responses still open get what is left of the timeout.
        let _ = stop_tx.send(true);
        tokio::time::timeout_at(deadline, server).await
    };
    tokio::select! {
        finished = drain => match finished {
            Ok(Ok(Ok(()))) => tracing::info!("all requests finished"),
            Ok(Ok(Err(e))) => return Err(e.to_string().into()),
            Ok(Err(e)) => return Err(e.to_string().into()),
            Err(_) => tracing::warn!("shutdown timeout reached; closing remaining connections"),
        },
        _ = signals.next() => {
            let running = state.ready.get().map_or(0, |r| r.engine.snapshot().running);
            return Err(format!(
                "a second shutdown signal cut the drain short ({running} sequences were running)"
            )
            .into());
        }
    }
    Ok(())
}

/// Why `serve` failed (binding, loading the model, a cut drain), as a message.
pub type ServeError = Box<dyn std::error::Error + Send + Sync>;
