//! Tool use in the Messages API, not supported yet: the one place that refuses it, for tool
//! calling to replace later.

use serde_json::Value;

use super::super::error::ApiError;

/// Refuses `tools` and `tool_choice` (an empty `tools` list asks for nothing and is accepted).
pub fn refuse_tools(tools: Option<&Value>, tool_choice: Option<&Value>) -> Result<(), ApiError> {
    let asked = [
        ("tools", tools.is_some_and(|t| !is_empty_list(t))),
        ("tool_choice", tool_choice.is_some_and(|c| !c.is_null())),
    ];
    match asked.into_iter().find(|(_, asked)| *asked) {
        Some((field, _)) => Err(ApiError::invalid(field, "tool use is not supported yet")),
        None => Ok(()),
    }
}

/// Refuses the content blocks of tool use (`tool_use`, `tool_result`) at `at`.
pub fn refuse_tool_block(kind: &str, at: &str) -> Result<(), ApiError> {
    if matches!(kind, "tool_use" | "tool_result" | "server_tool_use") {
        return Err(ApiError::invalid(
            format!("{at}.type"),
            format!("content block type `{kind}`: tool use is not supported yet"),
        ));
    }
    Ok(())
}

fn is_empty_list(value: &Value) -> bool {
    value.is_null() || value.as_array().is_some_and(Vec::is_empty)
}
