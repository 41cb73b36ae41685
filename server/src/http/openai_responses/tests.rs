use serde_json::{json, Value};

use super::input::conversation;
use super::request::Input;
use super::text_format::text_constraint;
use super::tools::refuse_tools;
use crate::engine::OutputConstraint;
use crate::http::error::ApiError;

fn convert(instructions: Option<&str>, input: Value) -> Result<Vec<(String, String)>, ApiError> {
    let input: Input = serde_json::from_value(input).unwrap();
    Ok(conversation(instructions, &input)?
        .into_iter()
        .map(|t| (t.role, t.content))
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
    assert_eq!(param, "input[0].type");
    assert!(message.contains("not supported yet"), "{message}");
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

#[test]
fn tools_are_refused_naming_the_field_unless_empty() {
    let tool = json!([{"type": "function", "name": "f", "parameters": {}}]);
    assert_eq!(
        refuse_tools(Some(&tool), None)
            .unwrap_err()
            .param
            .as_deref(),
        Some("tools")
    );
    assert_eq!(
        refuse_tools(None, Some(&json!("required")))
            .unwrap_err()
            .param
            .as_deref(),
        Some("tool_choice")
    );
    assert!(refuse_tools(Some(&json!([])), None).is_ok());
}
