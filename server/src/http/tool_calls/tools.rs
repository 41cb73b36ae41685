//! Tools as any endpoint states them, apart from an API's shapes: the functions a request
//! offers, which of them the model must or may call, and a call of one.

use serde_json::{json, Value};

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FunctionTool {
    pub name: String,
    pub description: Option<String>,
    /// A JSON Schema of the arguments object; `None`: the function takes no arguments.
    pub parameters: Option<Value>,
    pub strict: Option<bool>,
}

impl FunctionTool {
    /// The JSON Schema the arguments of a call must match.
    pub fn arguments_schema(&self) -> Value {
        self.parameters.clone().unwrap_or_else(
            || json!({"type": "object", "properties": {}, "additionalProperties": false}),
        )
    }

    /// The tool in OpenAI's shape, which chat templates take as `tools` and which the prompt
    /// lists when the template does not.
    pub fn template_json(&self) -> Value {
        let mut function = serde_json::Map::new();
        function.insert("name".into(), json!(self.name));
        if let Some(d) = &self.description {
            function.insert("description".into(), json!(d));
        }
        function.insert("parameters".into(), self.arguments_schema());
        if let Some(strict) = self.strict {
            function.insert("strict".into(), json!(strict));
        }
        json!({"type": "function", "function": function})
    }
}

/// Which calls the model must or may make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToolChoice {
    /// No calls: the tools are not shown to the model and its text is not read for calls.
    None,
    /// The model decides; calls it writes are read out of its text.
    Auto,
    /// At least one call (exactly one without parallel calls), enforced by a grammar.
    Required,
    /// One call of this function, enforced by a grammar.
    Function(String),
}

/// The tools of a request and how they may be used.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ToolRequest {
    pub tools: Vec<FunctionTool>,
    pub choice: ToolChoice,
    /// Whether one answer may make several calls.
    pub parallel: bool,
}

impl ToolRequest {
    /// The tools the prompt shows the model (none under `tool_choice: none`).
    pub fn shown(&self) -> Option<&[FunctionTool]> {
        (self.choice != ToolChoice::None).then_some(self.tools.as_slice())
    }

    /// The tools a grammar forces a call of, if the choice enforces one.
    pub fn enforced(&self) -> Option<Vec<&FunctionTool>> {
        match &self.choice {
            ToolChoice::None | ToolChoice::Auto => None,
            ToolChoice::Required => Some(self.tools.iter().collect()),
            ToolChoice::Function(name) => {
                Some(self.tools.iter().filter(|t| &t.name == name).collect())
            }
        }
    }

    /// Calls one answer may make: several only when parallel calls are allowed and the choice
    /// is not one named function.
    pub fn max_calls(&self) -> Option<usize> {
        let many = self.parallel && !matches!(self.choice, ToolChoice::Function(_));
        if many {
            None
        } else {
            Some(1)
        }
    }
}

/// A call of a function: made by the assistant in an earlier turn, or read out of generated
/// text. `arguments` is JSON text, as OpenAI's API carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FunctionCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}
