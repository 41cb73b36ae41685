//! Request bodies of the OpenAI API with this server's extensions. Fields these types do not
//! declare are refused by name (never silently ignored): the accepted names of a body are its
//! structs' fields (`field_names`), and message objects collect any other key in `unknown`.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

/// A prompt: text, one text in a list, or token ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Sampling and EPAS fields shared by both endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CommonParams {
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub n: Option<i64>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub logit_bias: Option<HashMap<String, f64>>,
    /// Accepted for OpenAI compatibility; not used.
    #[allow(dead_code)]
    pub user: Option<String>,
    // Extensions (vLLM's names where vLLM has them).
    pub sharing_ratio: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub min_tokens: Option<i64>,
    #[serde(default)]
    pub ignore_eos: bool,
    pub stop_token_ids: Option<Vec<u32>>,
    /// `false` opts out of speculative decoding when the server drafts tokens.
    pub speculative: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    /// Return the log-probability of each token and this many alternatives (0..=20).
    pub logprobs: Option<i64>,
    #[serde(default)]
    pub echo: bool,
    pub best_of: Option<i64>,
    pub suffix: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// Keys a message object (or a part of one) has beyond its type's fields.
pub type UnknownFields = BTreeMap<String, serde_json::Value>;

#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
    /// The text of an assistant's `refusal` part.
    pub refusal: Option<String>,
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// One chat message with the fields OpenAI defines for any role; which belong to which role is
/// checked in `chat_messages`. `null` reads as absent, as in OpenAI's API.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub role: Option<String>,
    pub content: Option<MessageContent>,
    /// Accepted for OpenAI compatibility; chat templates here do not render it.
    pub name: Option<String>,
    pub refusal: Option<String>,
    pub tool_calls: Option<Vec<ToolCall>>,
    pub tool_call_id: Option<String>,
    pub audio: Option<serde_json::Value>,
    pub function_call: Option<serde_json::Value>,
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// A tool call of an assistant message.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolCall {
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub function: Option<FunctionCall>,
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FunctionCall {
    pub name: Option<String>,
    pub arguments: Option<String>,
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub max_completion_tokens: Option<i64>,
    #[serde(default)]
    pub logprobs: bool,
    pub top_logprobs: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TokenizeRequest {
    pub model: Option<String>,
    pub prompt: Option<String>,
    pub messages: Option<Vec<Message>>,
    #[serde(default = "default_true")]
    pub add_generation_prompt: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<u32>,
}

fn default_true() -> bool {
    true
}
