//! Errors in Anthropic's shape, `{"type": "error", "error": {"type", "message"}}`, with the
//! error type Anthropic gives each status. The message starts with the field at fault, as
//! Anthropic's do (`max_tokens: ...`).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{json, Value};

use super::super::error::ApiError;

/// Whether `path` is one of Anthropic's routes (`/v1/messages` and the routes under it).
fn is_anthropic_route(path: &str) -> bool {
    path == "/v1/messages" || path.starts_with("/v1/messages/")
}

/// Anthropic's error type for a status.
pub fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        408 | 504 => "timeout_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

pub fn error_body(error: &ApiError) -> Value {
    let message = match &error.param {
        Some(param) => format!("{param}: {}", error.message),
        None => error.message.clone(),
    };
    json!({"type": "error", "error": {"type": error_type(error.status), "message": message}})
}

/// Rewrites the errors of Anthropic's routes (those of the handlers and of the layers around
/// them: authentication, body limit, timeout, unknown route) into Anthropic's shape, keeping
/// their status and headers.
pub async fn anthropic_errors(request: Request, next: Next) -> Response {
    let anthropic = is_anthropic_route(request.uri().path());
    let response = next.run(request).await;
    if !anthropic {
        return response;
    }
    let Some(error) = response.extensions().get::<ApiError>().cloned() else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(error_body(&error).to_string()))
}
