//! Counts every generation request once, by the status it finally got, and why it was refused
//! when it never ran. The layer sits outside authentication, the body limit and the request
//! timeout, so the answers those give are counted as well.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::error::ErrorCode;
use crate::metrics::Metrics;

/// Every value of `epas_requests_rejected_total{reason}` (a public contract, see README).
pub(crate) const REFUSAL_REASONS: [&str; 6] = [
    "queue_full",
    "draining",
    "invalid",
    "unauthorized",
    "loading",
    "engine_failed",
];

pub(crate) async fn count_generation_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    if !is_generation(&request) {
        return next.run(request).await;
    }
    let response = next.run(request).await;
    metrics
        .requests_total
        .with_label_values(&[response.status().as_str()])
        .inc();
    if let Some(reason) = refusal_reason(&response) {
        metrics
            .requests_rejected_total
            .with_label_values(&[reason])
            .inc();
    }
    response
}

fn is_generation(request: &Request) -> bool {
    request.method() == Method::POST
        && matches!(
            request.uri().path(),
            "/v1/completions" | "/v1/chat/completions" | "/v1/messages" | "/v1/responses"
        )
}

/// Why a response refused its request before it ran; `None` for one that ran (whatever its
/// outcome: 200, a 408 timeout, a 500).
fn refusal_reason(response: &Response) -> Option<&'static str> {
    match response.status() {
        StatusCode::UNAUTHORIZED => Some("unauthorized"),
        StatusCode::TOO_MANY_REQUESTS => Some("queue_full"),
        StatusCode::BAD_REQUEST
        | StatusCode::NOT_FOUND
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::UNSUPPORTED_MEDIA_TYPE
        | StatusCode::UNPROCESSABLE_ENTITY => Some("invalid"),
        StatusCode::SERVICE_UNAVAILABLE => {
            match response.extensions().get::<ErrorCode>().map(|c| c.0) {
                Some("draining") => Some("draining"),
                Some("model_loading") => Some("loading"),
                Some("engine_failed") => Some("engine_failed"),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;

    use super::*;
    use crate::http::ApiError;

    #[test]
    fn refusals_get_their_reason_and_requests_that_ran_get_none() {
        let reason = |e: ApiError| refusal_reason(&e.into_response());
        assert_eq!(reason(ApiError::unauthorized()), Some("unauthorized"));
        assert_eq!(reason(ApiError::overloaded("full")), Some("queue_full"));
        assert_eq!(reason(ApiError::bad_request("no")), Some("invalid"));
        assert_eq!(reason(ApiError::not_found("no")), Some("invalid"));
        assert_eq!(reason(ApiError::draining()), Some("draining"));
        assert_eq!(reason(ApiError::loading()), Some("loading"));
        assert_eq!(
            reason(ApiError::engine_failed("boom")),
            Some("engine_failed")
        );
        assert_eq!(reason(ApiError::internal("lost")), None);
        let timeout = ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout", "slow");
        assert_eq!(reason(timeout), None);
        for r in [
            reason(ApiError::unauthorized()),
            reason(ApiError::draining()),
            reason(ApiError::loading()),
            reason(ApiError::engine_failed("boom")),
        ] {
            assert!(REFUSAL_REASONS.contains(&r.unwrap()));
        }
    }
}
