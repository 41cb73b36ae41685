//! The request body of OpenAI's Responses API (`POST /v1/responses`) with this server's
//! `sharing_ratio`. Fields these types do not declare are refused by name, in input items and
//! content parts too.

use serde::Deserialize;
use serde_json::Value;

use super::super::schema::UnknownFields;

#[derive(Debug, Clone, Deserialize)]
pub struct ResponsesRequest {
    pub model: Option<String>,
    pub input: Option<Input>,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    #[serde(default)]
    pub stream: bool,
    pub metadata: Option<Value>,
    /// Accepted; nothing is stored (the response says `"store": false`).
    #[allow(dead_code)]
    pub store: Option<bool>,
    pub text: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub tools: Option<Vec<ToolSpec>>,
    pub tool_choice: Option<ToolChoiceSpec>,
    pub previous_response_id: Option<String>,
    // Extension.
    pub sharing_ratio: Option<f64>,
}

/// The conversation: a user's text, or a list of input items.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<InputItem>),
}

/// An input item: a message, a function call an earlier answer made (`call_id`, `name`,
/// `arguments`) or its result (`call_id`, `output`); which fields a type needs is checked after
/// reading.
#[derive(Debug, Clone, Deserialize)]
pub struct InputItem {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub role: Option<String>,
    pub content: Option<ItemContent>,
    pub call_id: Option<String>,
    pub name: Option<String>,
    pub arguments: Option<String>,
    pub output: Option<ItemContent>,
    /// An earlier response's output item sent back carries these; accepted, not used.
    #[allow(dead_code)]
    pub id: Option<String>,
    #[allow(dead_code)]
    pub status: Option<String>,
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ItemContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub text: Option<String>,
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// A tool as the Responses API states it (flat: `{"type": "function", "name", "parameters"}`).
#[derive(Debug, Clone, Deserialize)]
pub struct ToolSpec {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub parameters: Option<Value>,
    pub strict: Option<bool>,
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// `"none"`, `"auto"`, `"required"` or `{"type": "function", "name"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ToolChoiceSpec {
    Mode(String),
    Named(NamedTool),
}

#[derive(Debug, Clone, Deserialize)]
pub struct NamedTool {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: Option<String>,
    #[serde(flatten)]
    pub unknown: UnknownFields,
}
