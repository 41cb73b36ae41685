//! Tool calling in the Responses API: `tools` (function tools, stated flat:
//! `{"type": "function", "name", "description", "parameters", "strict"}`), `tool_choice`
//! (`none`, `auto`, `required` or `{"type": "function", "name"}`) and `parallel_tool_calls`,
//! checked into the tool-calling core's request. Every refusal is a 400 naming the field; the
//! hosted tools (web search, file search, computer use, MCP...) are refused by type.

use serde_json::{json, Value};

use super::super::body::refuse_unknown;
use super::super::error::ApiError;
use super::super::tool_calls::{
    choice_mode, chosen_function, function_name, function_type, object_schema, tool_list,
};
use super::super::tool_calls::{FunctionTool, ToolChoice, ToolRequest};
use super::request::{ToolChoiceSpec, ToolSpec};

/// The request's tools and how they may be used; `None` when it offers none (an empty list
/// offers none).
pub fn tool_request(
    tools: Option<&[ToolSpec]>,
    choice: Option<&ToolChoiceSpec>,
    parallel: Option<bool>,
) -> Result<Option<ToolRequest>, ApiError> {
    let tools = match tools {
        Some(tools) if !tools.is_empty() => tool_list(tools, ".name", function_tool)?,
        _ => {
            return match choice {
                None => Ok(None),
                Some(ToolChoiceSpec::Mode(mode)) if matches!(mode.as_str(), "none" | "auto") => {
                    Ok(None)
                }
                Some(_) => Err(ApiError::invalid(
                    "tool_choice",
                    "tool_choice needs `tools` to choose from",
                )),
            }
        }
    };
    let choice = match choice {
        None => ToolChoice::Auto,
        Some(c) => tool_choice(c, &tools)?,
    };
    Ok(Some(ToolRequest {
        tools,
        choice,
        parallel: parallel.unwrap_or(true),
    }))
}

/// The `tools` and `tool_choice` a response object repeats (`strict` defaults to true in
/// this API; a choice given without tools is repeated as given).
pub fn echoed(request: Option<&ToolRequest>, given: Option<&ToolChoiceSpec>) -> (Value, Value) {
    let Some(request) = request else {
        let choice = match given {
            Some(ToolChoiceSpec::Mode(mode)) => json!(mode),
            _ => json!("auto"),
        };
        return (json!([]), choice);
    };
    let tools = request
        .tools
        .iter()
        .map(|t| {
            json!({"type": "function", "name": t.name, "description": t.description,
                   "parameters": t.parameters, "strict": t.strict.unwrap_or(true)})
        })
        .collect::<Vec<_>>();
    let choice = match &request.choice {
        ToolChoice::None => json!("none"),
        ToolChoice::Auto => json!("auto"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Function(name) => json!({"type": "function", "name": name}),
    };
    (json!(tools), choice)
}

fn function_tool(spec: &ToolSpec, at: &str) -> Result<FunctionTool, ApiError> {
    function_type(spec.kind.as_deref(), at, "tool")?;
    refuse_unknown(&spec.unknown, at)?;
    Ok(FunctionTool {
        name: function_name(spec.name.as_deref(), &format!("{at}.name"))?,
        description: spec.description.clone(),
        parameters: object_schema(spec.parameters.as_ref(), &format!("{at}.parameters"))?,
        strict: spec.strict,
    })
}

fn tool_choice(spec: &ToolChoiceSpec, tools: &[FunctionTool]) -> Result<ToolChoice, ApiError> {
    match spec {
        ToolChoiceSpec::Mode(mode) => choice_mode(mode),
        ToolChoiceSpec::Named(named) => {
            function_type(named.kind.as_deref(), "tool_choice", "tool_choice")?;
            refuse_unknown(&named.unknown, "tool_choice")?;
            chosen_function(named.name.as_deref(), tools, "tool_choice.name")
        }
    }
}
