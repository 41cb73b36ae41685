//! Turns a raw request body into a typed request, with OpenAI-shaped errors that name the
//! offending field.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::schema::UnknownFields;

/// Parses `body` as a JSON object whose keys are all in `allowed`, then as `T`.
pub fn parse<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
    allowed: &[&[&str]],
) -> Result<T, ApiError> {
    typed(&parse_object(headers, body, allowed)?)
}

/// Parses `body` as a JSON object whose keys are all in `allowed`.
pub fn parse_object(
    headers: &HeaderMap,
    body: &Bytes,
    allowed: &[&[&str]],
) -> Result<serde_json::Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            format!("expected Content-Type: application/json, got {content_type:?}"),
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid UTF-8: {e}")))?;
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    for key in object.keys() {
        if !allowed.iter().any(|list| list.contains(&key.as_str())) {
            return Err(ApiError::unsupported_field(
                key.clone(),
                format!("unsupported field `{key}`"),
            ));
        }
    }
    Ok(value)
}

/// Reads `T` out of a JSON value; a type error names the field it is in.
pub fn typed<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        let param = if path == "." { None } else { Some(path) };
        let mut err = ApiError::bad_request(format!("invalid request: {}", e.inner()));
        if let Some(p) = param {
            err.param = Some(p);
            err.code = Some("invalid_type");
        }
        err
    })
}

/// Refuses the first key of `unknown` (the fields a typed object did not declare), named under
/// `at`.
pub fn refuse_unknown(unknown: &UnknownFields, at: &str) -> Result<(), ApiError> {
    match unknown.keys().next() {
        None => Ok(()),
        Some(key) => Err(ApiError::unsupported_field(
            format!("{at}.{key}"),
            format!("unsupported field `{key}`"),
        )),
    }
}
