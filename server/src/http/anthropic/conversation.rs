//! Anthropic's `system` and `messages` as the turns the chat template renders: roles `user` and
//! `assistant`, content a string or `text` blocks. A last assistant message is a prefill: the
//! answer continues its text.

use epas_model::ChatMessage;

use super::super::body::refuse_unknown;
use super::super::error::ApiError;
use super::request::{Content, ContentBlock, InputMessage};
use super::tools::refuse_tool_block;

/// The conversation to render, and the start of the assistant's answer when the last message
/// is the assistant's.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub turns: Vec<ChatMessage>,
    pub prefill: Option<String>,
}

pub fn conversation(
    system: Option<&Content>,
    messages: &[InputMessage],
) -> Result<Conversation, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid("messages", "messages must not be empty"));
    }
    let mut turns = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = system {
        let text = text(system, "system")?;
        if !text.is_empty() {
            turns.push(ChatMessage {
                role: "system".into(),
                content: text,
            });
        }
    }
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        refuse_unknown(&m.unknown, &at)?;
        let role =
            match m.role.as_deref() {
                Some(role @ ("user" | "assistant")) => role,
                Some("system") => return Err(ApiError::invalid(
                    format!("{at}.role"),
                    "role `system` is not a message role here: use the top-level `system` field",
                )),
                Some(other) => {
                    return Err(ApiError::invalid(
                        format!("{at}.role"),
                        format!("role `{other}` is not supported (user, assistant)"),
                    ))
                }
                None => {
                    return Err(ApiError::invalid(
                        format!("{at}.role"),
                        "`role` is required",
                    ))
                }
            };
        let content = m
            .content
            .as_ref()
            .ok_or_else(|| ApiError::invalid(format!("{at}.content"), "`content` is required"))?;
        turns.push(ChatMessage {
            role: role.into(),
            content: text(content, &format!("{at}.content"))?,
        });
    }
    let prefill = match turns.last() {
        Some(last) if last.role == "assistant" => turns.pop().map(|t| t.content),
        _ => None,
    };
    Ok(Conversation { turns, prefill })
}

/// The text of `content` (at `at`): the string, or its text blocks joined.
fn text(content: &Content, at: &str) -> Result<String, ApiError> {
    let blocks = match content {
        Content::Text(t) => return Ok(t.clone()),
        Content::Blocks(blocks) => blocks,
    };
    let mut text = String::new();
    for (j, block) in blocks.iter().enumerate() {
        text.push_str(block_text(block, &format!("{at}[{j}]"))?);
    }
    Ok(text)
}

fn block_text<'a>(block: &'a ContentBlock, at: &str) -> Result<&'a str, ApiError> {
    match block.kind.as_deref() {
        Some("text") => {}
        Some(kind) => {
            refuse_tool_block(kind, at)?;
            return Err(ApiError::invalid(
                format!("{at}.type"),
                format!("content block type `{kind}` is not supported (text blocks only)"),
            ));
        }
        None => {
            return Err(ApiError::invalid(
                format!("{at}.type"),
                "`type` is required",
            ))
        }
    }
    refuse_unknown(&block.unknown, at)?;
    block
        .text
        .as_deref()
        .ok_or_else(|| ApiError::invalid(format!("{at}.text"), "`text` is required"))
}
