use serde_json::{json, Value};

use super::input::conversation;
use super::request::Input;
use super::request::ResponsesRequest;
use super::text_format::text_constraint;
use super::tools::{echoed, tool_request};
use crate::engine::OutputConstraint;
use crate::http::error::ApiError;
use crate::http::tool_calls::{FunctionCall, ToolChoice, ToolRequest};

fn convert(instructions: Option<&str>, input: Value) -> Result<Vec<(String, String)>, ApiError> {
    let input: Input = serde_json::from_value(input).unwrap();
    Ok(conversation(instructions, &input)?
        .into_iter()
        .map(|t| (t.role.to_string(), t.content))
        .collect())
}

fn refused(input: Value) -> (String, String) {
    let e = convert(None, input).unwrap_err();
    assert_eq!(e.status, 400);
    (e.param.expect("a field"), e.message)
}

#[test]
fn a_string_or_message_items_become_turns_after_the_instructions() {
    assert_eq!(
        convert(Some("Be brief."), json!("Hi")).unwrap(),
        [
            ("system".into(), "Be brief.".into()),
            ("user".into(), "Hi".into())
        ]
    );
    let items = json!([
        {"role": "developer", "content": "Answer in French."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Hello, "}, {"type": "input_text", "text": "who?"}]},
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "Moi.", "annotations": [], "logprobs": []}]},
        {"role": "user", "content": "Et toi?"},
    ]);
    assert_eq!(
        convert(None, items).unwrap(),
        [
            ("system".into(), "Answer in French.".into()),
            ("user".into(), "Hello, who?".into()),
            ("assistant".into(), "Moi.".into()),
            ("user".into(), "Et toi?".into()),
        ]
    );
}

#[test]
fn other_items_parts_and_fields_are_refused_by_name() {
    let (param, message) = refused(json!([{"role": "user", "content": [
        {"type": "input_text", "text": "a"}, {"type": "input_image", "image_url": "x"}]}]));
    assert_eq!(param, "input[0].content[1].type");
    assert!(message.contains("`input_image`"), "{message}");
    let (param, _) =
        refused(json!([{"role": "user", "content": [{"type": "output_text", "text": "a"}]}]));
    assert_eq!(param, "input[0].content[0].type");
    let (param, _) = refused(json!([{"role": "user", "content": [
        {"type": "input_text", "text": "a", "annotations": []}]}]));
    assert_eq!(param, "input[0].content[0].annotations");
    let (param, message) = refused(json!([{"type": "function_call_output", "call_id": "c",
                                            "output": "4"}]));
    assert_eq!(param, "input[0].call_id");
    assert!(message.contains("answers no unanswered"), "{message}");
    let (param, _) = refused(json!([{"type": "reasoning", "summary": []}]));
    assert_eq!(param, "input[0].type");
    let (param, _) = refused(json!([{"role": "tool", "content": "x"}]));
    assert_eq!(param, "input[0].role");
    let (param, _) = refused(json!([{"role": "user", "content": "x", "name": "n"}]));
    assert_eq!(param, "input[0].name");
    let (param, _) = refused(json!([]));
    assert_eq!(param, "input");
}

#[test]
fn text_format_gives_the_constraint_of_response_format() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let output = |text: Value| text_constraint(Some(&text)).unwrap().map(|c| c.output);
    assert_eq!(
        output(
            json!({"format": {"type": "json_schema", "name": "a", "schema": schema,
                                 "strict": true, "description": "d"}})
        ),
        Some(OutputConstraint::JsonSchema(schema.clone()))
    );
    assert_eq!(
        output(json!({"format": {"type": "json_object"}})),
        Some(OutputConstraint::JsonObject)
    );
    assert_eq!(output(json!({"format": {"type": "text"}})), None);
    assert_eq!(output(json!({})), None);
    assert!(text_constraint(None).unwrap().is_none());
    let refused = |text: Value| text_constraint(Some(&text)).unwrap_err().param.unwrap();
    assert_eq!(
        refused(json!({"format": {"type": "yaml"}})),
        "text.format.type"
    );
    assert_eq!(
        refused(json!({"format": {"type": "json_schema", "name": "a"}})),
        "text.format.schema"
    );
    assert_eq!(
        refused(json!({"format": {"type": "json_schema", "name": "a b", "schema": {}}})),
        "text.format.name"
    );
    assert_eq!(
        refused(json!({"format": {"type": "json_object", "schema": {}}})),
        "text.format.schema"
    );
    assert_eq!(refused(json!({"verbosity": "low"})), "text.verbosity");
}

/// The tool fields of a request body, checked as `/v1/responses` checks them.
fn tools_of(body: Value) -> Result<Option<ToolRequest>, ApiError> {
    let req: ResponsesRequest = serde_json::from_value(body).unwrap();
    tool_request(
        req.tools.as_deref(),
        req.tool_choice.as_ref(),
        req.parallel_tool_calls,
    )
}

fn weather() -> Value {
    json!({"type": "function", "name": "get_weather", "description": "Weather now",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}})
}

#[test]
fn function_tools_and_each_tool_choice_become_the_tool_request() {
    let request = tools_of(json!({"tools": [weather()]})).unwrap().unwrap();
    assert_eq!(request.tools[0].name, "get_weather");
    assert_eq!(request.choice, ToolChoice::Auto);
    assert!(request.parallel);
    for (choice, expected) in [
        (json!("none"), ToolChoice::None),
        (json!("required"), ToolChoice::Required),
        (
            json!({"type": "function", "name": "get_weather"}),
            ToolChoice::Function("get_weather".into()),
        ),
    ] {
        let request = tools_of(json!({"tools": [weather()], "tool_choice": choice,
                                      "parallel_tool_calls": false}))
        .unwrap()
        .unwrap();
        assert_eq!(request.choice, expected);
        assert!(!request.parallel);
        let (tools, echoed_choice) = echoed(Some(&request), None);
        assert_eq!(tools[0]["name"], "get_weather");
        assert_eq!(tools[0]["type"], "function");
        assert_eq!(echoed_choice, choice);
    }
    assert!(tools_of(json!({"tools": []})).unwrap().is_none());
    assert!(tools_of(json!({"tool_choice": "auto"})).unwrap().is_none());
    assert_eq!(echoed(None, None), (json!([]), json!("auto")));
}

#[test]
fn malformed_tools_and_choices_are_refused_by_field() {
    for (body, param) in [
        (
            json!({"tools": [{"type": "web_search_preview"}]}),
            "tools[0].type",
        ),
        (json!({"tools": [{"name": "f"}]}), "tools[0].type"),
        (json!({"tools": [{"type": "function"}]}), "tools[0].name"),
        (
            json!({"tools": [{"type": "function", "name": "a b"}]}),
            "tools[0].name",
        ),
        (
            json!({"tools": [{"type": "function", "name": "f", "parameters": 3}]}),
            "tools[0].parameters",
        ),
        (
            json!({"tools": [{"type": "function", "name": "f", "function": {}}]}),
            "tools[0].function",
        ),
        (json!({"tools": [weather(), weather()]}), "tools[1].name"),
        (json!({"tool_choice": "required"}), "tool_choice"),
        (
            json!({"tools": [weather()], "tool_choice": "any"}),
            "tool_choice",
        ),
        (
            json!({"tools": [weather()], "tool_choice": {"type": "function", "name": "other"}}),
            "tool_choice.name",
        ),
        (
            json!({"tools": [weather()], "tool_choice": {"type": "file_search"}}),
            "tool_choice.type",
        ),
        (
            json!({"tools": [weather()], "tool_choice": {"type": "function"}}),
            "tool_choice.name",
        ),
    ] {
        let e = tools_of(body.clone()).expect_err(&format!("accepted {body}"));
        assert_eq!(e.status, 400, "{body}");
        assert_eq!(e.param.as_deref(), Some(param), "{body}: {e:?}");
    }
}

#[test]
fn function_calls_and_their_outputs_become_assistant_and_tool_turns() {
    let input: Input = serde_json::from_value(json!([
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "get_weather",
         "arguments": "{\"city\": \"Paris\"}", "status": "completed"},
        {"type": "function_call", "call_id": "call_b", "name": "get_weather",
         "arguments": "{\"city\": \"Oslo\"}"},
        {"type": "function_call_output", "call_id": "call_b", "output": "-3 C"},
        {"type": "function_call_output", "call_id": "call_a",
         "output": [{"type": "input_text", "text": "21 C"}]},
        {"type": "function_call", "call_id": "call_c", "name": "get_weather",
         "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_c", "output": "?"},
    ]))
    .unwrap();
    let turns = conversation(None, &input).unwrap();
    let roles: Vec<&str> = turns.iter().map(|t| t.role).collect();
    assert_eq!(
        roles,
        ["user", "assistant", "tool", "tool", "assistant", "tool"]
    );
    assert_eq!(turns[1].content, "Checking.");
    assert_eq!(
        turns[1].tool_calls,
        [
            FunctionCall {
                id: "call_a".into(),
                name: "get_weather".into(),
                arguments: "{\"city\": \"Paris\"}".into()
            },
            FunctionCall {
                id: "call_b".into(),
                name: "get_weather".into(),
                arguments: "{\"city\": \"Oslo\"}".into()
            },
        ]
    );
    assert_eq!(turns[2].tool_call_id.as_deref(), Some("call_b"));
    assert_eq!(turns[2].content, "-3 C");
    assert_eq!(turns[3].content, "21 C");
    assert_eq!(turns[4].content, "");
    assert_eq!(turns[4].tool_calls[0].id, "call_c");
}

#[test]
fn an_answers_text_after_its_calls_joins_their_turn() {
    let input: Input = serde_json::from_value(json!([
        {"role": "user", "content": "Weather?"},
        {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call_output", "call_id": "a", "output": "sunny"},
    ]))
    .unwrap();
    let turns = conversation(None, &input).unwrap();
    let roles: Vec<&str> = turns.iter().map(|t| t.role).collect();
    assert_eq!(roles, ["user", "assistant", "tool"]);
    assert_eq!(turns[1].content, "Checking.");
    assert_eq!(turns[1].tool_calls.len(), 1);
}

#[test]
fn calls_must_be_answered_once_before_the_next_message() {
    let call =
        |id: &str| json!({"type": "function_call", "call_id": id, "name": "f", "arguments": "{}"});
    let output = |id: &str| json!({"type": "function_call_output", "call_id": id, "output": "x"});
    let user = json!({"role": "user", "content": "go on"});
    for (items, param, says) in [
        (
            json!([call("a")]),
            "input[0].call_id",
            "no function_call_output",
        ),
        (
            json!([call("a"), user.clone()]),
            "input[0].call_id",
            "no function_call_output",
        ),
        (
            json!([call("a"), call("a")]),
            "input[1].call_id",
            "earlier function_call",
        ),
        (
            json!([call("a"), output("a"), output("a")]),
            "input[2].call_id",
            "answers no unanswered",
        ),
        (
            json!([output("z")]),
            "input[0].call_id",
            "answers no unanswered",
        ),
        (
            json!([{"type": "function_call", "name": "f", "arguments": "{}"}]),
            "input[0].call_id",
            "required",
        ),
        (
            json!([{"type": "function_call", "call_id": "a", "name": "f"}]),
            "input[0].arguments",
            "required",
        ),
        (
            json!([call("a"), {"type": "function_call_output", "call_id": "a"}]),
            "input[1].output",
            "required",
        ),
        (
            json!([{"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}",
                    "role": "assistant"}]),
            "input[0].role",
            "does not belong",
        ),
        (
            json!([{"role": "user", "content": "x", "call_id": "a"}]),
            "input[0].call_id",
            "does not belong",
        ),
    ] {
        let e = convert(None, items.clone()).expect_err(&format!("accepted {items}"));
        assert_eq!(e.param.as_deref(), Some(param), "{items}: {e:?}");
        assert!(e.message.contains(says), "{items}: {}", e.message);
    }
}
