//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the status
//! that fits.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The `code` of an error response, kept on the response for the layers around the handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ErrorCode(pub &'static str);

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400 for a bad field.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            code: Some("invalid_value"),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }

    /// 400 for `field` missing from the object at `at` (named `at.field`).
    pub fn required(at: &str, field: &str) -> Self {
        Self::invalid(format!("{at}.{field}"), format!("`{field}` is required"))
    }

    /// 400 for a field not accepted where it was sent.
    pub fn unsupported_field(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::invalid(param, message).with_code("unsupported_field")
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message).with_code("not_found")
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing or invalid API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`",
        )
        .with_code("invalid_api_key")
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "server_overloaded", message)
            .with_code("queue_full");
        e.retry_after = Some(1);
        e
    }

    /// 503 while the model loads; worth retrying here soon.
    pub fn loading() -> Self {
        Self::unavailable("the model is still loading").with_code("model_loading")
    }

    /// 503 after SIGTERM; retry on another replica.
    pub fn draining() -> Self {
        Self::unavailable("the server is shutting down").with_code("draining")
    }

    /// 503 once the engine thread has died: this replica cannot recover, so no `Retry-After`.
    pub fn engine_failed(panic: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            format!("the engine failed and this server needs a restart: {panic}"),
        )
        .with_code("engine_failed")
    }

    fn unavailable(message: &str) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            message,
        );
        e.retry_after = Some(5);
        e
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    /// The error with its `param` named as the API that was called names it.
    pub fn renamed(mut self, renames: &[(&str, &str)]) -> Self {
        if let Some((_, to)) = renames
            .iter()
            .find(|(from, _)| self.param.as_deref() == Some(*from))
        {
            self.param = Some(to.to_string());
        }
        self
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(code) = self.code {
            response.extensions_mut().insert(ErrorCode(code));
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        // The official SDKs retry every 5xx unless told not to; a 501 fails the same way again.
        if self.status == StatusCode::NOT_IMPLEMENTED {
            response.headers_mut().insert(
                header::HeaderName::from_static("x-should-retry"),
                HeaderValue::from_static("false"),
            );
        }
        // Kept for the layers that write errors in another API's shape (Anthropic's).
        response.extensions_mut().insert(self);
        response
    }
}

impl From<crate::engine::InvalidRequest> for ApiError {
    fn from(e: crate::engine::InvalidRequest) -> Self {
        let code = e.code.unwrap_or("invalid_value");
        Self::invalid(e.param, e.message).with_code(code)
    }
}

/// A request the validation step refused: a 400 for the request's fault, a 501 for what this
/// server cannot do for any request (the client should not retry it here).
impl From<crate::engine::Refusal> for ApiError {
    fn from(e: crate::engine::Refusal) -> Self {
        match e {
            crate::engine::Refusal::Invalid(e) => e.into(),
            crate::engine::Refusal::Unsupported { param, message } => Self {
                param: Some(param.into()),
                code: Some("not_implemented"),
                ..Self::new(StatusCode::NOT_IMPLEMENTED, "server_error", message)
            },
        }
    }
}

/// A request that failed while generating: a 500 when the engine failed, a 400 when its own
/// output constraint could not go on.
impl From<crate::engine::Failure> for ApiError {
    fn from(f: crate::engine::Failure) -> Self {
        match f.cause {
            crate::engine::FailureCause::Engine => Self::internal(f.message),
            crate::engine::FailureCause::Constraint => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", f.message)
                    .with_code("constraint_failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{InvalidRequest, Refusal};

    #[test]
    fn a_refusal_is_the_clients_fault_only_when_the_request_is_invalid() {
        let invalid: ApiError = Refusal::Invalid(InvalidRequest {
            param: "structured_outputs",
            code: None,
            message: "bad regex".into(),
        })
        .into();
        assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
        assert_eq!(invalid.param.as_deref(), Some("structured_outputs"));
        let unsupported: ApiError = Refusal::Unsupported {
            param: "response_format",
            message: "output constraints are unavailable: no trie".into(),
        }
        .into();
        assert_eq!(unsupported.status, StatusCode::NOT_IMPLEMENTED);
        assert_eq!(unsupported.code, Some("not_implemented"));
        assert!(unsupported.message.contains("unavailable"));
        let response = unsupported.into_response();
        assert_eq!(response.headers()["x-should-retry"], "false");
        assert!(invalid
            .into_response()
            .headers()
            .get("x-should-retry")
            .is_none());
    }
}
