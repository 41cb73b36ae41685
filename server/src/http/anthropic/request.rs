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
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
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
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
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

/// A content block; only `text` blocks are read, other types are refused by type.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentBlock {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub text: Option<String>,
    /// Prompt-caching hint, accepted: this server reuses cached prefixes by itself.
    #[allow(dead_code)]
    pub cache_control: Option<Value>,
    #[serde(flatten)]
    pub unknown: UnknownFields,
}
