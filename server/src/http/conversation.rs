//! A conversation as chat templates render it: text turns, assistant turns that call tools, and
//! tool results answering those calls. Each API's messages are checked into these turns.

use super::tool_calls::FunctionCall;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Turn {
    /// The role the template knows (`system`, `user`, `assistant`, `tool`).
    pub role: &'static str,
    pub content: String,
    /// The calls an assistant turn makes.
    pub tool_calls: Vec<FunctionCall>,
    /// The call a tool turn answers.
    pub tool_call_id: Option<String>,
}

impl Turn {
    pub fn text(role: &'static str, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}
