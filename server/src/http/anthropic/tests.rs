use axum::http::StatusCode;
use serde_json::{json, Value};

use super::conversation::{conversation, Conversation};
use super::errors::{error_body, error_type};
use super::request::{Content, InputMessage};
use crate::http::error::ApiError;

fn convert(system: Value, messages: Value) -> Result<Conversation, ApiError> {
    let system: Option<Content> = serde_json::from_value(system).unwrap();
    let messages: Vec<InputMessage> = serde_json::from_value(messages).unwrap();
    conversation(system.as_ref(), &messages)
}

fn refused(system: Value, messages: Value) -> (String, String) {
    let e = convert(system, messages).unwrap_err();
    assert_eq!(e.status, 400);
    (e.param.expect("a field"), e.message)
}

fn turns(c: &Conversation) -> Vec<(String, String)> {
    c.turns
        .iter()
        .map(|t| (t.role.to_string(), t.content.clone()))
        .collect()
}

#[test]
fn system_and_text_blocks_become_turns_and_a_last_assistant_message_is_a_prefill() {
    let c = convert(
        json!([{"type": "text", "text": "Be brief. "}, {"type": "text", "text": "Be kind.",
                "cache_control": {"type": "ephemeral"}}]),
        json!([
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
            {"role": "user", "content": [{"type": "text", "text": "2+2?"}]},
            {"role": "assistant", "content": "The answer is"},
        ]),
    )
    .unwrap();
    assert_eq!(
        turns(&c),
        [
            ("system".into(), "Be brief. Be kind.".into()),
            ("user".into(), "Hi".into()),
            ("assistant".into(), "Hello!".into()),
            ("user".into(), "2+2?".into()),
        ]
    );
    assert_eq!(c.prefill.as_deref(), Some("The answer is"));

    let c = convert(json!(null), json!([{"role": "user", "content": "Hi"}])).unwrap();
    assert_eq!(turns(&c), [("user".into(), "Hi".into())]);
    assert_eq!(c.prefill, None);
}

#[test]
fn other_blocks_roles_and_fields_are_refused_by_name() {
    let user = |content: Value| json!([{"role": "user", "content": content}]);
    let (param, message) = refused(
        json!(null),
        user(json!([{"type": "text", "text": "a"},
                    {"type": "image", "source": {"type": "base64"}}])),
    );
    assert_eq!(param, "messages[0].content[1].type");
    assert!(message.contains("`image`"), "{message}");
    let (param, _) = refused(
        json!(null),
        user(json!([{"type": "text", "text": "a", "citations": []}])),
    );
    assert_eq!(param, "messages[0].content[0].citations");
    let (param, _) = refused(json!([{"type": "image"}]), user(json!("hi")));
    assert_eq!(param, "system[0].type");
    let (param, message) = refused(json!(null), json!([{"role": "system", "content": "x"}]));
    assert_eq!(param, "messages[0].role");
    assert!(message.contains("top-level `system`"), "{message}");
    let (param, _) = refused(json!(null), json!([{"role": "user"}]));
    assert_eq!(param, "messages[0].content");
    let (param, _) = refused(
        json!(null),
        json!([{"role": "user", "content": "x", "name": "n"}]),
    );
    assert_eq!(param, "messages[0].name");
    let (param, _) = refused(json!(null), json!([]));
    assert_eq!(param, "messages");
}

#[test]
fn errors_have_anthropics_shape_and_type_per_status() {
    let e = ApiError::invalid("max_tokens", "required");
    assert_eq!(
        error_body(&e),
        json!({"type": "error", "error": {"type": "invalid_request_error",
                                          "message": "max_tokens: required"}})
    );
    assert_eq!(
        error_body(&ApiError::internal("lost"))["error"]["message"],
        "lost"
    );
    let types = [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (408, "timeout_error"),
        (413, "request_too_large"),
        (415, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
    ];
    for (status, kind) in types {
        assert_eq!(
            error_type(StatusCode::from_u16(status).unwrap()),
            kind,
            "{status}"
        );
    }
}
