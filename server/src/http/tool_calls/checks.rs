//! The checks every API makes of the tools it is offered: how many, unique names of the allowed
//! characters, and an arguments schema that describes an object. Each refusal is a 400 naming
//! the field in the API's own words (`tools[1].function.name`, `tools[1].input_schema`).

use std::collections::HashSet;

use serde_json::Value;

use super::super::error::ApiError;
use super::tools::{FunctionTool, ToolChoice};

/// The most tools one request may offer (OpenAI's limit).
pub(crate) const MAX_TOOLS: usize = 128;

/// The tools of `specs`, each read by `one` (given its path, `tools[i]`); a name given twice is
/// refused at `tools[i]` followed by `name_path`.
pub(crate) fn tool_list<S>(
    specs: &[S],
    name_path: &str,
    one: impl Fn(&S, &str) -> Result<FunctionTool, ApiError>,
) -> Result<Vec<FunctionTool>, ApiError> {
    if specs.len() > MAX_TOOLS {
        return Err(ApiError::invalid(
            "tools",
            format!("at most {MAX_TOOLS} tools, got {}", specs.len()),
        ));
    }
    let mut names = HashSet::new();
    let mut tools = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let tool = one(spec, &format!("tools[{i}]"))?;
        if !names.insert(tool.name.clone()) {
            return Err(ApiError::invalid(
                format!("tools[{i}]{name_path}"),
                format!("function `{}` is defined twice", tool.name),
            ));
        }
        tools.push(tool);
    }
    Ok(tools)
}

/// A function name (the field at `at`): 1 to 64 characters of a-z, A-Z, 0-9, `_` and `-`, the
/// rule of both OpenAI and Anthropic.
pub(crate) fn function_name(name: Option<&str>, at: &str) -> Result<String, ApiError> {
    let name = name.ok_or_else(|| ApiError::invalid(at, format!("`{}` is required", last(at))))?;
    let valid = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(ApiError::invalid(
            at,
            "a function name is 1 to 64 characters of a-z, A-Z, 0-9, _ and -",
        ));
    }
    Ok(name.to_string())
}

/// An arguments schema (the field at `at`): a JSON Schema of an object, or nothing.
pub(crate) fn object_schema(value: Option<&Value>, at: &str) -> Result<Option<Value>, ApiError> {
    let field = last(at);
    let schema = match value {
        None => return Ok(None),
        Some(Value::Object(schema)) => schema,
        Some(_) => {
            return Err(ApiError::invalid(
                at,
                format!("`{field}` must be a JSON Schema object"),
            ))
        }
    };
    match schema.get("type") {
        None => {}
        Some(Value::String(t)) if t == "object" => {}
        Some(other) => {
            return Err(ApiError::invalid(
                at,
                format!(
                    "`{field}` must be a JSON Schema of an object (`\"type\": \"object\"`), \
                     got type {other}"
                ),
            ))
        }
    }
    Ok(Some(Value::Object(schema.clone())))
}

/// The last name of a field path (`name` of `tools[0].function.name`).
fn last(at: &str) -> &str {
    at.rsplit('.').next().unwrap_or(at)
}

/// A tool's (or a choice's) `type` at `at`: `function`, the only type this server calls.
pub(crate) fn function_type(kind: Option<&str>, at: &str, what: &str) -> Result<(), ApiError> {
    match kind {
        Some("function") => Ok(()),
        None => Err(ApiError::required(at, "type")),
        Some(other) => Err(ApiError::invalid(
            format!("{at}.type"),
            format!("{what} type `{other}` is not supported (function only)"),
        )),
    }
}

/// A `tool_choice` given as a word: `none`, `auto` or `required`.
pub(crate) fn choice_mode(mode: &str) -> Result<ToolChoice, ApiError> {
    match mode {
        "none" => Ok(ToolChoice::None),
        "auto" => Ok(ToolChoice::Auto),
        "required" => Ok(ToolChoice::Required),
        other => Err(ApiError::invalid(
            "tool_choice",
            format!("tool_choice `{other}` is not one of none, auto, required, or a function"),
        )),
    }
}

/// A `tool_choice` naming one of `tools` (the name given at `at`).
pub(crate) fn chosen_function(
    name: Option<&str>,
    tools: &[FunctionTool],
    at: &str,
) -> Result<ToolChoice, ApiError> {
    let name = name.ok_or_else(|| ApiError::invalid(at, "`name` is required"))?;
    if !tools.iter().any(|t| t.name == name) {
        return Err(ApiError::invalid(
            at,
            format!("no function named `{name}` in tools"),
        ));
    }
    Ok(ToolChoice::Function(name.to_string()))
}
