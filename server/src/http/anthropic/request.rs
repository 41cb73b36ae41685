//! The request bodies of Anthropic's Messages API with this server's `sharing_ratio`. Fields
//! these types do not declare are refused by name, in blocks and messages too.

use serde::Deserialize;
use serde_json::Value;

use super::super::schema::UnknownFields;

/// `POST /v1/messages`.
#[derive(Debug, Clone, Deserialize)]
pub struct MessagesRequest {
    pub model: Option<String>,
    /// Required, as in Anthropic's API; checked by hand for a clear message.
    pub max_tokens: Option<i64>,
    pub messages: Vec<InputMessage>,
    pub system: Option<Content>,
    pub stop_sequences: Option<Vec<String>>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    #[serde(default)]
    pub stream: bool,
    /// Accepted (`user_id`); not used.
    #[allow(dead_code)]
    pub metadata: Option<Value>,
    pub tools: Option<Vec<ToolDefinition>>,
    pub tool_choice: Option<ToolChoiceSpec>,
    /// Prompt-caching hint, accepted: this server reuses cached prefixes by itself.
    #[allow(dead_code)]
    pub cache_control: Option<Value>,
    // Extension.
    pub sharing_ratio: Option<f64>,
}

/// `POST /v1/messages/count_tokens`.
#[derive(Debug, Clone, Deserialize)]
pub struct CountTokensRequest {
    pub model: Option<String>,
    pub messages: Vec<InputMessage>,
    pub system: Option<Content>,
    pub tools: Option<Vec<ToolDefinition>>,
    pub tool_choice: Option<ToolChoiceSpec>,
    #[allow(dead_code)]
    pub cache_control: Option<Value>,
}

/// A turn of the conversation.
#[derive(Debug, Clone, Deserialize)]
pub struct InputMessage {
    pub role: Option<String>,
    pub content: Option<Content>,
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// A message's (or the system prompt's) content: a string or content blocks.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Blocks(Vec<ContentBlock>),
}

/// A content block: `text`, an assistant's `tool_use` or a user's `tool_result`; other types
/// are refused by type, and fields of another type by name.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentBlock {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub text: Option<String>,
    /// Prompt-caching hint, accepted: this server reuses cached prefixes by itself.
    #[allow(dead_code)]
    pub cache_control: Option<Value>,
    // tool_use
    pub id: Option<String>,
    pub name: Option<String>,
    pub input: Option<Value>,
    // tool_result
    pub tool_use_id: Option<String>,
    pub content: Option<Content>,
    pub is_error: Option<bool>,
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// A tool the model may use: a client tool (type `custom`, the default); server tools
/// (`web_search_...`, `bash_...`) are refused by type.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolDefinition {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub input_schema: Option<Value>,
    /// Prompt-caching hint, accepted: this server reuses cached prefixes by itself.
    #[allow(dead_code)]
    pub cache_control: Option<Value>,
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// `{"type": "auto" | "any" | "tool" | "none", "name", "disable_parallel_tool_use"}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolChoiceSpec {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: Option<String>,
    pub disable_parallel_tool_use: Option<bool>,
    #[serde(flatten)]
    pub unknown: UnknownFields,
}
