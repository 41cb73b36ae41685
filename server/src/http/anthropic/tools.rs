//! Tool use in the Messages API: `tools` (client tools with an `input_schema`) and
//! `tool_choice` (`auto`, `any`, `tool` with a `name`, `none`; `disable_parallel_tool_use`)
//! checked into the tool-calling core's request. Every refusal is a 400 naming the field.

use super::super::body::refuse_unknown;
use super::super::error::ApiError;
use super::super::tool_calls::{function_name, object_schema, tool_list, FunctionTool};
use super::super::tool_calls::{ToolChoice, ToolRequest};
use super::request::{ToolChoiceSpec, ToolDefinition};

/// The request's tools and how they may be used; `None` when it offers none (an empty list
/// offers none, as in Anthropic's API).
pub fn tool_request(
    tools: Option<&[ToolDefinition]>,
    choice: Option<&ToolChoiceSpec>,
) -> Result<Option<ToolRequest>, ApiError> {
    let (kind, parallel) = match choice {
        Some(spec) => checked_choice(spec)?,
        None => ("auto", true),
    };
    let tools = match tools {
        Some(tools) if !tools.is_empty() => tool_list(tools, ".name", function_tool)?,
        _ if matches!(kind, "auto" | "none") => return Ok(None),
        _ => {
            return Err(ApiError::invalid(
                "tool_choice",
                format!("tool_choice `{kind}` needs `tools` to choose from"),
            ))
        }
    };
    let choice = match kind {
        "auto" => ToolChoice::Auto,
        "any" => ToolChoice::Required,
        "none" => ToolChoice::None,
        _ => {
            let name = choice.and_then(|c| c.name.as_deref()).unwrap_or_default();
            if !tools.iter().any(|t| t.name == name) {
                return Err(ApiError::invalid(
                    "tool_choice.name",
                    format!("no tool named `{name}` in tools"),
                ));
            }
            ToolChoice::Function(name.to_string())
        }
    };
    Ok(Some(ToolRequest {
        tools,
        choice,
        parallel,
    }))
}

/// The choice's type and whether it allows several calls in one answer.
fn checked_choice(spec: &ToolChoiceSpec) -> Result<(&str, bool), ApiError> {
    refuse_unknown(&spec.unknown, "tool_choice")?;
    let kind = match spec.kind.as_deref() {
        Some(kind @ ("auto" | "any" | "tool" | "none")) => kind,
        Some(other) => {
            return Err(ApiError::invalid(
                "tool_choice.type",
                format!("tool_choice type `{other}` is not one of auto, any, tool, none"),
            ))
        }
        None => return Err(ApiError::required("tool_choice", "type")),
    };
    match (kind, &spec.name) {
        ("tool", None) => return Err(ApiError::required("tool_choice", "name")),
        ("tool", Some(_)) | (_, None) => {}
        (_, Some(_)) => {
            return Err(ApiError::unsupported_field(
                "tool_choice.name",
                format!("`name` belongs to tool_choice type `tool`, not `{kind}`"),
            ))
        }
    }
    Ok((kind, !spec.disable_parallel_tool_use.unwrap_or(false)))
}

fn function_tool(tool: &ToolDefinition, at: &str) -> Result<FunctionTool, ApiError> {
    match tool.kind.as_deref() {
        None | Some("custom") => {}
        Some(other) => {
            return Err(ApiError::invalid(
                format!("{at}.type"),
                format!("tool type `{other}` is not supported (client tools, type `custom`)"),
            ))
        }
    }
    refuse_unknown(&tool.unknown, at)?;
    let name = function_name(tool.name.as_deref(), &format!("{at}.name"))?;
    let schema_at = format!("{at}.input_schema");
    let schema = object_schema(tool.input_schema.as_ref(), &schema_at)?
        .ok_or_else(|| ApiError::required(at, "input_schema"))?;
    Ok(FunctionTool {
        name,
        description: tool.description.clone(),
        parameters: Some(schema),
        strict: None,
    })
}
