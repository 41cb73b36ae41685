//! Tool use in the Messages API: tools and choices read into the core's request, tool_use and
//! tool_result blocks into turns, and answers with calls in Anthropic's shapes.

use serde_json::{json, Value};

use super::conversation::conversation;
use super::format::MessagesFormat;
use super::request::{Content, InputMessage, ToolChoiceSpec, ToolDefinition};
use super::tools::tool_request;
use crate::engine::{FinishReason, Usage};
use crate::http::answer_format::{AnswerFormat, ChoiceOutput, StreamStep};
use crate::http::conversation::Turn;
use crate::http::error::ApiError;
use crate::http::tool_calls::{Convention, FunctionCall, ToolChoice, ToolOutput, ToolRequest};

fn read_tools(tools: Value, choice: Value) -> Result<Option<ToolRequest>, ApiError> {
    let tools: Option<Vec<ToolDefinition>> = serde_json::from_value(tools).unwrap();
    let choice: Option<ToolChoiceSpec> = serde_json::from_value(choice).unwrap();
    tool_request(tools.as_deref(), choice.as_ref())
}

fn refused_tools(tools: Value, choice: Value, param: &str, says: &str) {
    let e =
        read_tools(tools.clone(), choice.clone()).expect_err(&format!("accepted {tools} {choice}"));
    assert_eq!(e.status, 400);
    assert_eq!(e.param.as_deref(), Some(param), "{tools} {choice}: {e:?}");
    assert!(
        e.message.contains(says),
        "{:?} does not say {says:?}",
        e.message
    );
}

fn weather() -> Value {
    json!({"name": "get_weather", "description": "Weather now", "cache_control": {"type": "ephemeral"},
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}})
}

#[test]
fn tools_and_each_choice_are_read() {
    let tools =
        json!([weather(), {"type": "custom", "name": "now", "input_schema": {"type": "object"}}]);
    let r = read_tools(tools.clone(), json!(null)).unwrap().unwrap();
    assert_eq!(r.choice, ToolChoice::Auto);
    assert!(r.parallel);
    assert_eq!(r.tools[0].name, "get_weather");
    assert_eq!(r.tools[0].description.as_deref(), Some("Weather now"));
    assert_eq!(
        r.tools[0].parameters,
        Some(weather()["input_schema"].clone())
    );
    assert_eq!(r.tools[1].parameters, Some(json!({"type": "object"})));
    for (choice, expected, parallel) in [
        (json!({"type": "auto"}), ToolChoice::Auto, true),
        (
            json!({"type": "any", "disable_parallel_tool_use": true}),
            ToolChoice::Required,
            false,
        ),
        (
            json!({"type": "tool", "name": "now"}),
            ToolChoice::Function("now".into()),
            true,
        ),
        (json!({"type": "none"}), ToolChoice::None, true),
    ] {
        let r = read_tools(tools.clone(), choice.clone()).unwrap().unwrap();
        assert_eq!((r.choice, r.parallel), (expected, parallel), "{choice}");
    }
    assert_eq!(read_tools(json!([]), json!(null)).unwrap(), None);
    assert_eq!(
        read_tools(json!(null), json!({"type": "auto"})).unwrap(),
        None
    );
    assert_eq!(
        read_tools(json!(null), json!({"type": "none"})).unwrap(),
        None
    );
}

#[test]
fn malformed_tools_and_choices_are_refused_by_field() {
    let tools = json!([weather()]);
    refused_tools(
        json!([{"name": "f"}]),
        json!(null),
        "tools[0].input_schema",
        "required",
    );
    refused_tools(
        json!([{"name": "f", "input_schema": {"type": "array"}}]),
        json!(null),
        "tools[0].input_schema",
        "object",
    );
    refused_tools(
        json!([weather(), weather()]),
        json!(null),
        "tools[1].name",
        "twice",
    );
    refused_tools(
        json!([{"name": "a b", "input_schema": {}}]),
        json!(null),
        "tools[0].name",
        "1 to 64",
    );
    refused_tools(
        json!([{"type": "web_search_20250305", "name": "web_search"}]),
        json!(null),
        "tools[0].type",
        "`web_search_20250305`",
    );
    refused_tools(
        json!([{"name": "f", "input_schema": {}, "strict": true}]),
        json!(null),
        "tools[0].strict",
        "unsupported",
    );
    refused_tools(
        tools.clone(),
        json!({"type": "tool", "name": "other"}),
        "tool_choice.name",
        "`other`",
    );
    refused_tools(
        tools.clone(),
        json!({"type": "tool"}),
        "tool_choice.name",
        "required",
    );
    refused_tools(
        tools.clone(),
        json!({"type": "auto", "name": "get_weather"}),
        "tool_choice.name",
        "`tool`",
    );
    refused_tools(
        tools.clone(),
        json!({"type": "required"}),
        "tool_choice.type",
        "`required`",
    );
    refused_tools(tools, json!({}), "tool_choice.type", "required");
    refused_tools(
        json!(null),
        json!({"type": "any"}),
        "tool_choice",
        "needs `tools`",
    );
    refused_tools(
        json!([]),
        json!({"type": "tool", "name": "f"}),
        "tool_choice",
        "needs `tools`",
    );
}

fn turns(messages: Value) -> Result<Vec<Turn>, ApiError> {
    let messages: Vec<InputMessage> = serde_json::from_value(messages).unwrap();
    conversation(None::<&Content>, &messages).map(|c| c.turns)
}

fn refused_turns(messages: Value, param: &str, says: &str) {
    let e = turns(messages.clone()).expect_err(&format!("accepted {messages}"));
    assert_eq!(e.status, 400);
    assert_eq!(e.param.as_deref(), Some(param), "{messages}: {e:?}");
    assert!(
        e.message.contains(says),
        "{:?} does not say {says:?}",
        e.message
    );
}

fn tool_use(id: &str) -> Value {
    json!({"type": "tool_use", "id": id, "name": "get_weather", "input": {"city": "Paris"}})
}

fn tool_result(id: &str, content: Value) -> Value {
    json!({"type": "tool_result", "tool_use_id": id, "content": content})
}

#[test]
fn tool_use_and_tool_result_blocks_become_calls_and_tool_turns() {
    let got = turns(json!([
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, tool_use("toolu_1"), tool_use("toolu_2")]},
        {"role": "user", "content": [
            tool_result("toolu_2", json!([{"type": "text", "text": "rain"}])),
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sun", "is_error": false},
            {"type": "text", "text": "Thanks"}]},
    ]))
    .unwrap();
    let call = |id: &str| FunctionCall {
        id: id.into(),
        name: "get_weather".into(),
        arguments: r#"{"city":"Paris"}"#.into(),
    };
    let answer = |id: &str, text: &str| Turn {
        tool_call_id: Some(id.into()),
        ..Turn::text("tool", text)
    };
    assert_eq!(
        got,
        vec![
            Turn::text("user", "Weather in Paris and Rome?"),
            Turn {
                tool_calls: vec![call("toolu_1"), call("toolu_2")],
                ..Turn::text("assistant", "Checking.")
            },
            answer("toolu_2", "rain"),
            answer("toolu_1", "sun"),
            Turn::text("user", "Thanks"),
        ]
    );
    // Results alone make no user turn; the conversation may go on after them.
    let got = turns(json!([
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [tool_use("t")]},
        {"role": "user", "content": [tool_result("t", json!("sun"))]},
    ]))
    .unwrap();
    assert_eq!(got.last(), Some(&answer("t", "sun")));
}

#[test]
fn tool_blocks_out_of_place_or_unanswered_are_refused_by_field() {
    let user = json!({"role": "user", "content": "Weather?"});
    let called = json!({"role": "assistant", "content": [tool_use("t")]});
    refused_turns(
        json!([user, called, {"role": "user", "content": "what?"}]),
        "messages[1].content",
        "no tool_result",
    );
    refused_turns(
        json!([user, called]),
        "messages[1].content",
        "no tool_result",
    );
    refused_turns(
        json!([user, called, {"role": "user", "content": [tool_result("x", json!("sun"))]}]),
        "messages[2].content[0].tool_use_id",
        "`x`",
    );
    refused_turns(
        json!([user, called, {"role": "user", "content": [{"type": "text", "text": "a"}, tool_result("t", json!("sun"))]}]),
        "messages[2].content[1]",
        "before any other content",
    );
    refused_turns(
        json!([{"role": "user", "content": [tool_use("t")]}]),
        "messages[0].content[0].type",
        "assistant messages",
    );
    refused_turns(
        json!([user, {"role": "assistant", "content": [tool_result("t", json!("x"))]}]),
        "messages[1].content[0].type",
        "user messages",
    );
    refused_turns(
        json!([user, {"role": "assistant", "content": [tool_use("t"), tool_use("t")]}]),
        "messages[1].content[1].id",
        "twice",
    );
    refused_turns(
        json!([user, {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": [1]}]}]),
        "messages[1].content[0].input",
        "object",
    );
    refused_turns(
        json!([user, {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "input": {}}]}]),
        "messages[1].content[0].name",
        "required",
    );
    refused_turns(
        json!([{"role": "user", "content": [{"type": "text", "text": "a", "tool_use_id": "t"}]}]),
        "messages[0].content[0].tool_use_id",
        "does not belong",
    );
    refused_turns(
        json!([user, called, {"role": "user", "content": [tool_result("t", json!([tool_use("u")]))]}]),
        "messages[2].content[0].content[0].type",
        "text blocks only",
    );
}

fn format() -> MessagesFormat {
    let request = ToolRequest {
        tools: read_tools(json!([weather()]), json!(null))
            .unwrap()
            .unwrap()
            .tools,
        choice: ToolChoice::Auto,
        parallel: true,
    };
    let output = ToolOutput::new(&request, Convention::Hermes).map(|o| o.with_id_prefix("toolu_"));
    MessagesFormat::new("msg_1".into(), "m".into(), json!({}), 5, output)
}

const CALL: &str =
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";

fn usage() -> Usage {
    Usage {
        prompt_tokens: 5,
        completion_tokens: 9,
        ..Default::default()
    }
}

#[test]
fn a_whole_answer_with_calls_has_tool_use_blocks_and_stop_reason_tool_use() {
    let choice = ChoiceOutput {
        text: format!("Let me check. {CALL}"),
        finish: FinishReason::Stop,
        ..Default::default()
    };
    let message = format().response(vec![choice], &usage());
    let id = message["content"][1]["id"].as_str().unwrap();
    assert!(id.starts_with("toolu_") && id.len() == 30, "{id}");
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "Let me check."},
               {"type": "tool_use", "id": id, "name": "get_weather", "input": {"city": "Paris"}}])
    );
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(message["stop_sequence"], Value::Null);

    let choice = ChoiceOutput {
        text: "Sunny".into(),
        finish: FinishReason::Stop,
        stop_sequence: Some("\n".into()),
        ..Default::default()
    };
    let message = format().response(vec![choice], &usage());
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "Sunny"}])
    );
    assert_eq!(message["stop_reason"], "stop_sequence");
    assert_eq!(message["stop_sequence"], "\n");
}

/// The data of every event of a stream that generates `pieces`, then finishes.
fn stream(pieces: &[&str]) -> Vec<Value> {
    let mut f = format();
    let mut events = f.opening_data();
    for text in pieces {
        events.extend(f.step_data(StreamStep::Text {
            index: 0,
            text,
            logprobs: None,
        }));
    }
    events.extend(f.step_data(StreamStep::Finished {
        index: 0,
        text: "",
        reason: FinishReason::Stop,
        stop_sequence: None,
    }));
    events.extend(f.step_data(StreamStep::Done(&usage())));
    events
}

#[test]
fn a_streamed_call_is_a_tool_use_block_after_the_text_block() {
    let (a, b) = CALL.split_at(20);
    let events = stream(&["Let me", " check. ", a, b]);
    let kinds: Vec<(&str, Option<u64>)> = events
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["index"].as_u64()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("message_start", None),
            ("ping", None),
            ("content_block_start", Some(0)),
            ("content_block_delta", Some(0)),
            ("content_block_delta", Some(0)),
            ("content_block_stop", Some(0)),
            ("content_block_start", Some(1)),
            ("content_block_delta", Some(1)),
            ("content_block_stop", Some(1)),
            ("message_delta", None),
            ("message_stop", None),
        ]
    );
    assert_eq!(
        events[3]["delta"],
        json!({"type": "text_delta", "text": "Let me"})
    );
    assert_eq!(
        events[4]["delta"],
        json!({"type": "text_delta", "text": " check."})
    );
    let block = &events[6]["content_block"];
    assert_eq!(block["type"], "tool_use");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(
        (&block["name"], &block["input"]),
        (&json!("get_weather"), &json!({}))
    );
    assert_eq!(
        events[7]["delta"],
        json!({"type": "input_json_delta", "partial_json": "{\"city\":\"Paris\"}"})
    );
    assert_eq!(
        events[9]["delta"],
        json!({"stop_reason": "tool_use", "stop_sequence": null})
    );

    // A forced call alone: the tool_use block is the first block.
    let events = stream(&[CALL]);
    assert_eq!(events[2]["content_block"]["type"], "tool_use");
    assert_eq!(events[2]["index"], 0);
    // No text and no call: one empty text block, as the whole answer has.
    let events = stream(&[]);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[4]["delta"]["stop_reason"], "end_turn");
}
