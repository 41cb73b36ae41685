//! Tool calling in the Responses API, not supported yet: the one place that refuses it, for
//! tool calling to replace later.

use serde_json::Value;

use super::super::error::ApiError;

/// Refuses `tools` and `tool_choice` (an empty `tools` list asks for nothing and is accepted).
pub fn refuse_tools(tools: Option<&Value>, tool_choice: Option<&Value>) -> Result<(), ApiError> {
    let empty = |v: &Value| v.is_null() || v.as_array().is_some_and(Vec::is_empty);
    if tools.is_some_and(|t| !empty(t)) {
        return Err(ApiError::invalid("tools", "tools are not supported yet"));
    }
    if tool_choice.is_some_and(|c| !c.is_null()) {
        return Err(ApiError::invalid(
            "tool_choice",
            "tools are not supported yet",
        ));
    }
    Ok(())
}

/// Refuses the input items of tool calling (`function_call`, `function_call_output`) at `at`.
pub fn refuse_tool_item(kind: &str, at: &str) -> Result<(), ApiError> {
    if matches!(kind, "function_call" | "function_call_output") {
        return Err(ApiError::invalid(
            format!("{at}.type"),
            format!("input item type `{kind}`: tools are not supported yet"),
        ));
    }
    Ok(())
}
