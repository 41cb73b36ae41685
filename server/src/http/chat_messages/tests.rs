use serde_json::{json, Value};

use super::*;
use crate::http::body::typed;
use crate::http::schema::ChatRequest;
use crate::http::tool_calls::FunctionCall;

/// Reads `messages` the way the chat endpoint does (types first, then the checks).
fn check(messages: Value) -> Result<Vec<Turn>, ApiError> {
    let request: ChatRequest = typed(&json!({ "messages": messages }))?;
    chat_messages(&request.messages)
}

/// Asserts that `messages` get a 400 naming `param`, with `says` in the message.
fn refused(messages: Value, param: &str, says: &str) -> ApiError {
    let e = match check(messages.clone()) {
        Ok(turns) => panic!("accepted {messages}: {turns:?}"),
        Err(e) => e,
    };
    assert_eq!(e.status, 400, "{messages}: {e:?}");
    assert_eq!(e.param.as_deref(), Some(param), "{messages}: {e:?}");
    assert!(
        e.message.contains(says),
        "{messages}: {:?} does not say {says:?}",
        e.message
    );
    e
}

fn turns(messages: Value) -> Vec<(String, String)> {
    check(messages)
        .unwrap()
        .into_iter()
        .map(|m| (m.role.to_string(), m.content))
        .collect()
}

fn pair(role: &str, content: &str) -> (String, String) {
    (role.to_string(), content.to_string())
}

/// An assistant message that calls `ids` and the tool messages answering them.
fn called(ids: &[&str]) -> Value {
    let calls: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "type": "function", "function": {"name": "f", "arguments": "{}"}}))
        .collect();
    json!({"role": "assistant", "content": null, "tool_calls": calls})
}

#[test]
fn text_turns_of_every_role_are_accepted() {
    let got = turns(json!([
        {"role": "system", "content": "Be brief.", "name": "ops"},
        {"role": "developer", "content": [{"type": "text", "text": "No "}, {"type": "text", "text": "lists."}]},
        {"role": "user", "content": "Hi", "name": "ann"},
        {"role": "assistant", "content": "Hello."},
        {"role": "assistant", "content": null, "refusal": "I can't help with that."},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
        {"role": "user", "content": ""},
    ]));
    assert_eq!(
        got,
        vec![
            pair("system", "Be brief."),
            pair("system", "No lists."),
            pair("user", "Hi"),
            pair("assistant", "Hello."),
            pair("assistant", "I can't help with that."),
            pair("assistant", "No."),
            pair("user", ""),
        ]
    );
}

#[test]
fn roles_are_required_and_known() {
    refused(json!([]), "messages", "must not be empty");
    refused(json!([{"content": "hi"}]), "messages[0].role", "required");
    refused(
        json!([{"role": "user", "content": "a"}, {"role": "robot", "content": "hi"}]),
        "messages[1].role",
        "`robot`",
    );
    refused(
        json!([{"role": "function", "name": "f", "content": "1"}]),
        "messages[0].role",
        "deprecated",
    );
    refused(
        json!([{"role": 5, "content": "hi"}]),
        "messages[0].role",
        "",
    );
}

#[test]
fn system_developer_user_and_tool_messages_need_content() {
    for role in ["system", "developer", "user"] {
        refused(json!([{"role": role}]), "messages[0].content", "required");
        refused(
            json!([{"role": role, "content": null}]),
            "messages[0].content",
            "required",
        );
        refused(
            json!([{"role": role, "content": []}]),
            "messages[0].content",
            "empty",
        );
    }
    refused(
        json!([{"role": "user", "content": 5}]),
        "messages[0].content",
        "",
    );
}

#[test]
fn only_text_parts_are_accepted_and_a_refusal_part_only_alone_from_the_assistant() {
    let e = refused(
        json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
        "messages[0].content",
        "image_url",
    );
    assert!(e.message.contains("is not supported"), "{}", e.message);
    refused(
        json!([{"role": "user", "content": [{"type": "text"}]}]),
        "messages[0].content[0].text",
        "required",
    );
    let e = refused(
        json!([{"role": "user", "content": [{"type": "text", "text": "a", "cache": 1}]}]),
        "messages[0].content[0].cache",
        "cache",
    );
    assert_eq!(e.code, Some("unsupported_field"));
    refused(
        json!([{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}]),
        "messages[0].content",
        "refusal",
    );
    refused(
        json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": [
            {"type": "refusal", "refusal": "no"}, {"type": "text", "text": "yes"}]}]),
        "messages[1].content",
        "exactly one",
    );
}

#[test]
fn assistant_content_may_be_missing_only_with_tool_calls_or_a_refusal() {
    refused(
        json!([{"role": "user", "content": "q"}, {"role": "assistant"}]),
        "messages[1].content",
        "required",
    );
    refused(
        json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": null, "tool_calls": []}]),
        "messages[1].content",
        "required",
    );
}

#[test]
fn fields_that_do_not_belong_to_the_role_or_to_any_message_are_refused_by_name() {
    for (message, param) in [
        (
            json!({"role": "user", "content": "a", "tool_call_id": "c1"}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"role": "system", "content": "a", "tool_calls": []}),
            "messages[0].tool_calls",
        ),
        (
            json!({"role": "user", "content": "a", "refusal": "no"}),
            "messages[0].refusal",
        ),
        (
            json!({"role": "user", "content": "a", "colour": "red"}),
            "messages[0].colour",
        ),
    ] {
        let e = refused(json!([message]), param, param.rsplit('.').next().unwrap());
        assert_eq!(e.code, Some("unsupported_field"), "{e:?}");
    }
    let e = refused(
        json!([{"role": "user", "content": "q"}, called(&["c1"]),
               {"role": "tool", "tool_call_id": "c1", "content": "1", "name": "f"}]),
        "messages[2].name",
        "name",
    );
    assert_eq!(e.code, Some("unsupported_field"));
    refused(
        json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "audio": {"id": "x"}}]),
        "messages[1].audio",
        "not supported",
    );
    refused(
        json!([{"role": "user", "content": "q"},
               {"role": "assistant", "content": null, "function_call": {"name": "f", "arguments": "{}"}}]),
        "messages[1].function_call",
        "deprecated",
    );
}

#[test]
fn tool_messages_need_an_id_that_answers_the_preceding_tool_calls() {
    let user = json!({"role": "user", "content": "q"});
    refused(
        json!([user, called(&["c1"]), {"role": "tool", "content": "1"}]),
        "messages[2].tool_call_id",
        "required",
    );
    refused(
        json!([user, called(&["c1"]), {"role": "tool", "tool_call_id": "c1"}]),
        "messages[2].content",
        "required",
    );
    refused(
        json!([user, called(&["c1"]), {"role": "tool", "tool_call_id": "c9", "content": "1"}]),
        "messages[2].tool_call_id",
        "`c9`",
    );
    refused(
        json!([user, {"role": "tool", "tool_call_id": "c1", "content": "1"}]),
        "messages[1].tool_call_id",
        "`c1`",
    );
    // A user turn between the calls and the answer: the calls were left unanswered.
    refused(
        json!([user, called(&["c1"]), user, {"role": "tool", "tool_call_id": "c1", "content": "1"}]),
        "messages[1].tool_calls",
        "`c1`",
    );
    refused(
        json!([user, called(&["c1", "c2"]), {"role": "tool", "tool_call_id": "c1", "content": "1"}]),
        "messages[1].tool_calls",
        "`c2`",
    );
}

#[test]
fn tool_calls_and_their_answers_become_turns() {
    let user = json!({"role": "user", "content": "q"});
    let answer =
        |id: &str, content: &str| json!({"role": "tool", "tool_call_id": id, "content": content});
    let calls = json!({"role": "assistant", "content": "Looking.", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}},
        {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]});
    let got = check(json!([user, calls, answer("c2", "two"), answer("c1", "one"), {"role": "user", "content": "more"}])).unwrap();
    let call = |id: &str, name: &str, arguments: &str| FunctionCall {
        id: id.into(),
        name: name.into(),
        arguments: arguments.into(),
    };
    let tool = |id: &str, content: &str| Turn {
        tool_call_id: Some(id.into()),
        ..Turn::text("tool", content)
    };
    assert_eq!(
        got,
        vec![
            Turn::text("user", "q"),
            Turn {
                tool_calls: vec![call("c1", "f", "{\"a\": 1}"), call("c2", "g", "{}")],
                ..Turn::text("assistant", "Looking.")
            },
            tool("c2", "two"),
            tool("c1", "one"),
            Turn::text("user", "more"),
        ]
    );
    let content_free = check(json!([user, called(&["c1"]), answer("c1", "1")])).unwrap();
    assert_eq!(content_free[1].content, "");
    assert_eq!(content_free[1].tool_calls.len(), 1);
}

#[test]
fn malformed_tool_calls_are_refused_by_field() {
    let user = json!({"role": "user", "content": "q"});
    let answer = |id: &str| json!({"role": "tool", "tool_call_id": id, "content": "1"});
    let call =
        |call: Value| json!([user, {"role": "assistant", "tool_calls": [call]}, answer("c1")]);
    refused(
        call(json!({"id": "c1", "type": "custom", "custom": {"name": "f", "input": ""}})),
        "messages[1].tool_calls[0].type",
        "`custom`",
    );
    refused(
        call(json!({"type": "function", "function": {"name": "f", "arguments": "{}"}})),
        "messages[1].tool_calls[0].id",
        "required",
    );
    refused(
        call(json!({"id": "c1", "type": "function", "function": {"arguments": "{}"}})),
        "messages[1].tool_calls[0].function.name",
        "required",
    );
    refused(
        call(json!({"id": "c1", "type": "function", "function": {"name": "f"}})),
        "messages[1].tool_calls[0].function.arguments",
        "required",
    );
    let e = refused(
        call(
            json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}, "index": 0}),
        ),
        "messages[1].tool_calls[0].index",
        "index",
    );
    assert_eq!(e.code, Some("unsupported_field"));
    let twice =
        json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}});
    refused(
        json!([user, {"role": "assistant", "tool_calls": [twice, twice]}, answer("c1")]),
        "messages[1].tool_calls[1].id",
        "`c1`",
    );
}
