//! The tool fields of an OpenAI chat request (`tools`, `tool_choice`, `parallel_tool_calls`),
//! checked into a [`ToolRequest`]. Every refusal is a 400 naming the field
//! (`tools[1].function.name`, `tool_choice.function.name`).

use serde::Deserialize;
use serde_json::Value;

use super::super::body::refuse_unknown;
use super::super::error::ApiError;
use super::super::schema::UnknownFields;
use super::checks::{
    choice_mode, chosen_function, function_name, function_type, object_schema, tool_list,
};
use super::tools::{FunctionTool, ToolChoice, ToolRequest};

/// The tool fields of a chat body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ToolParams {
    pub tools: Option<Vec<ToolSpec>>,
    pub tool_choice: Option<ToolChoiceSpec>,
    pub parallel_tool_calls: Option<bool>,
}

/// A tool as OpenAI's chat API states it; which fields it needs is checked after reading.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolSpec {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub function: Option<FunctionSpec>,
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FunctionSpec {
    pub name: Option<String>,
    pub description: Option<String>,
    pub parameters: Option<Value>,
    pub strict: Option<bool>,
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// `"none"`, `"auto"`, `"required"` or `{"type": "function", "function": {"name"}}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ToolChoiceSpec {
    Mode(String),
    Named(NamedChoice),
}

#[derive(Debug, Clone, Deserialize)]
pub struct NamedChoice {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub function: Option<ChosenFunction>,
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChosenFunction {
    pub name: Option<String>,
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

impl ToolParams {
    /// The request's tools and choice; `None` when it offers no tools.
    pub fn request(&self) -> Result<Option<ToolRequest>, ApiError> {
        let choice = self.tool_choice.as_ref();
        let Some(tools) = &self.tools else {
            return match choice {
                None => Ok(None),
                Some(ToolChoiceSpec::Mode(mode)) if mode == "none" => Ok(None),
                Some(_) => Err(ApiError::invalid(
                    "tool_choice",
                    "tool_choice needs `tools` to choose from",
                )),
            };
        };
        let tools = function_tools(tools)?;
        let choice = match choice {
            None => ToolChoice::Auto,
            Some(c) => tool_choice(c, &tools)?,
        };
        Ok(Some(ToolRequest {
            tools,
            choice,
            parallel: self.parallel_tool_calls.unwrap_or(true),
        }))
    }
}

fn function_tools(specs: &[ToolSpec]) -> Result<Vec<FunctionTool>, ApiError> {
    if specs.is_empty() {
        return Err(ApiError::invalid("tools", "tools must not be empty"));
    }
    tool_list(specs, ".function.name", function_tool)
}

fn function_tool(spec: &ToolSpec, at: &str) -> Result<FunctionTool, ApiError> {
    function_type(spec.kind.as_deref(), at, "tool")?;
    refuse_unknown(&spec.unknown, at)?;
    let function = spec
        .function
        .as_ref()
        .ok_or_else(|| ApiError::required(at, "function"))?;
    let at = format!("{at}.function");
    refuse_unknown(&function.unknown, &at)?;
    let name = function_name(function.name.as_deref(), &format!("{at}.name"))?;
    Ok(FunctionTool {
        name,
        description: function.description.clone(),
        parameters: object_schema(function.parameters.as_ref(), &format!("{at}.parameters"))?,
        strict: function.strict,
    })
}

fn tool_choice(spec: &ToolChoiceSpec, tools: &[FunctionTool]) -> Result<ToolChoice, ApiError> {
    const AT: &str = "tool_choice";
    match spec {
        ToolChoiceSpec::Mode(mode) => choice_mode(mode),
        ToolChoiceSpec::Named(named) => {
            function_type(named.kind.as_deref(), AT, "tool_choice")?;
            refuse_unknown(&named.unknown, AT)?;
            let function = named
                .function
                .as_ref()
                .ok_or_else(|| ApiError::required(AT, "function"))?;
            refuse_unknown(&function.unknown, "tool_choice.function")?;
            chosen_function(function.name.as_deref(), tools, "tool_choice.function.name")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::typed;
    use serde_json::json;

    /// Reads the tool fields of `body` the way the chat endpoint does (types, then checks).
    fn read(body: Value) -> Result<Option<ToolRequest>, ApiError> {
        typed::<ToolParams>(&body)?.request()
    }

    fn refused(body: Value, param: &str, says: &str) {
        let e = read(body.clone()).expect_err(&format!("accepted {body}"));
        assert_eq!(e.status, 400, "{body}: {e:?}");
        assert_eq!(e.param.as_deref(), Some(param), "{body}: {e:?}");
        assert!(
            e.message.contains(says),
            "{body}: {:?} does not say {says:?}",
            e.message
        );
    }

    fn weather() -> Value {
        json!({"type": "function", "function": {"name": "get_weather", "description": "Weather now",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "strict": true}})
    }

    fn tool(name: &str) -> Value {
        json!({"type": "function", "function": {"name": name}})
    }

    #[test]
    fn tools_and_each_choice_are_read() {
        let r = read(json!({"tools": [weather(), tool("now")]}))
            .unwrap()
            .unwrap();
        assert_eq!(r.choice, ToolChoice::Auto);
        assert!(r.parallel);
        assert_eq!(
            r.tools[0],
            FunctionTool {
                name: "get_weather".into(),
                description: Some("Weather now".into()),
                parameters: Some(
                    json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
                ),
                strict: Some(true),
            }
        );
        assert_eq!(r.tools[1].parameters, None);
        for (choice, expected) in [
            (json!("none"), ToolChoice::None),
            (json!("auto"), ToolChoice::Auto),
            (json!("required"), ToolChoice::Required),
            (
                json!({"type": "function", "function": {"name": "now"}}),
                ToolChoice::Function("now".into()),
            ),
        ] {
            let r = read(json!({"tools": [weather(), tool("now")], "tool_choice": choice, "parallel_tool_calls": false}))
                .unwrap()
                .unwrap();
            assert_eq!(r.choice, expected);
            assert!(!r.parallel);
        }
        assert_eq!(read(json!({})).unwrap(), None);
        assert_eq!(
            read(json!({"tools": null, "tool_choice": "none", "parallel_tool_calls": true}))
                .unwrap(),
            None
        );
    }

    #[test]
    fn malformed_tools_are_refused_by_field() {
        refused(json!({"tools": []}), "tools", "empty");
        refused(json!({"tools": {"a": 1}}), "tools", "expected a sequence");
        refused(
            json!({"tools": vec![tool("f"); 129]}),
            "tools",
            "at most 128",
        );
        refused(json!({"tools": [tool("f"), 3]}), "tools[1]", "invalid type");
        refused(
            json!({"tools": [tool("f"), {"function": {"name": "g"}}]}),
            "tools[1].type",
            "required",
        );
        refused(
            json!({"tools": [{"type": "custom", "custom": {"name": "g"}}]}),
            "tools[0].type",
            "`custom`",
        );
        refused(
            json!({"tools": [{"type": "function"}]}),
            "tools[0].function",
            "required",
        );
        refused(
            json!({"tools": [tool("f"), {"type": "function", "function": {"description": "x"}}]}),
            "tools[1].function.name",
            "required",
        );
        refused(
            json!({"tools": [tool("f"), tool("has space")]}),
            "tools[1].function.name",
            "1 to 64",
        );
        refused(
            json!({"tools": [tool(&"a".repeat(65))]}),
            "tools[0].function.name",
            "1 to 64",
        );
        refused(
            json!({"tools": [tool("f"), tool("f")]}),
            "tools[1].function.name",
            "twice",
        );
        refused(
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]}),
            "tools[0].function.parameters",
            "object",
        );
        refused(
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]}),
            "tools[0].function.parameters",
            "JSON Schema",
        );
        refused(
            json!({"tools": [{"type": "function", "function": {"name": "f", "description": 1}}]}),
            "tools[0].function.description",
            "invalid type",
        );
        refused(
            json!({"tools": [{"type": "function", "function": {"name": "f", "strict": "yes"}}]}),
            "tools[0].function.strict",
            "invalid type",
        );
        refused(
            json!({"tools": [{"type": "function", "function": {"name": "f", "colour": 1}}]}),
            "tools[0].function.colour",
            "unsupported",
        );
        refused(
            json!({"tools": [{"type": "function", "function": {"name": "f"}, "colour": 1}]}),
            "tools[0].colour",
            "unsupported",
        );
    }

    #[test]
    fn a_choice_must_name_a_known_function() {
        let tools = json!([weather()]);
        refused(
            json!({"tools": tools, "tool_choice": "always"}),
            "tool_choice",
            "`always`",
        );
        refused(
            json!({"tools": tools, "tool_choice": 1}),
            "tool_choice",
            "did not match",
        );
        refused(
            json!({"tools": tools, "tool_choice": {"type": "function", "function": {"name": "other"}}}),
            "tool_choice.function.name",
            "`other`",
        );
        refused(
            json!({"tools": tools, "tool_choice": {"type": "function", "function": {}}}),
            "tool_choice.function.name",
            "required",
        );
        refused(
            json!({"tools": tools, "tool_choice": {"type": "function"}}),
            "tool_choice.function",
            "required",
        );
        refused(
            json!({"tools": tools, "tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}),
            "tool_choice.type",
            "not supported",
        );
        refused(
            json!({"tool_choice": "required"}),
            "tool_choice",
            "needs `tools`",
        );
        refused(
            json!({"tool_choice": {"type": "function", "function": {"name": "f"}}}),
            "tool_choice",
            "needs `tools`",
        );
    }
}
