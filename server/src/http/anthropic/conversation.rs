//! Anthropic's `system` and `messages` as the turns the chat template renders: roles `user` and
//! `assistant`, content a string or blocks. An assistant's `tool_use` blocks are its tool calls;
//! the next user message answers every one of them with `tool_result` blocks, before any other
//! content. A last assistant message without tool use is a prefill: the answer continues its
//! text.

use serde_json::Value;

use super::super::body::refuse_unknown;
use super::super::conversation::Turn;
use super::super::error::ApiError;
use super::super::tool_calls::FunctionCall;
use super::request::{Content, ContentBlock, InputMessage};

/// The conversation to render, and the start of the assistant's answer when the last message
/// is the assistant's.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub turns: Vec<Turn>,
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
            turns.push(Turn::text("system", text));
        }
    }
    // The tool uses of the last assistant message that the next user message must answer.
    let mut unanswered = Unanswered::default();
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        refuse_unknown(&m.unknown, &at)?;
        let role = role(m, &at)?;
        let content = m
            .content
            .as_ref()
            .ok_or_else(|| ApiError::invalid(format!("{at}.content"), "`content` is required"))?;
        let at = format!("{at}.content");
        if role == "assistant" {
            unanswered.refuse_any()?;
            let turn = assistant_turn(content, &at)?;
            unanswered = Unanswered {
                at: at.clone(),
                ids: turn.tool_calls.iter().map(|c| c.id.clone()).collect(),
            };
            turns.push(turn);
        } else {
            user_turns(content, &at, &mut unanswered, &mut turns)?;
            unanswered.refuse_any()?;
        }
    }
    unanswered.refuse_any()?;
    let prefill = match turns.last() {
        Some(last) if last.role == "assistant" => turns.pop().map(|t| t.content),
        _ => None,
    };
    Ok(Conversation { turns, prefill })
}

fn role<'a>(m: &'a InputMessage, at: &str) -> Result<&'a str, ApiError> {
    match m.role.as_deref() {
        Some(role @ ("user" | "assistant")) => Ok(role),
        Some("system") => Err(ApiError::invalid(
            format!("{at}.role"),
            "role `system` is not a message role here: use the top-level `system` field",
        )),
        Some(other) => Err(ApiError::invalid(
            format!("{at}.role"),
            format!("role `{other}` is not supported (user, assistant)"),
        )),
        None => Err(ApiError::invalid(
            format!("{at}.role"),
            "`role` is required",
        )),
    }
}

/// An assistant message: its text, and its `tool_use` blocks as calls.
fn assistant_turn(content: &Content, at: &str) -> Result<Turn, ApiError> {
    let blocks = match content {
        Content::Text(t) => return Ok(Turn::text("assistant", t.clone())),
        Content::Blocks(blocks) => blocks,
    };
    let mut turn = Turn::text("assistant", String::new());
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}[{j}]");
        match block_kind(block, &at)? {
            "tool_use" => {
                let call = tool_use(block, &at)?;
                if turn.tool_calls.iter().any(|c| c.id == call.id) {
                    return Err(ApiError::invalid(
                        format!("{at}.id"),
                        format!("tool_use id `{}` appears twice in this message", call.id),
                    ));
                }
                turn.tool_calls.push(call);
            }
            "tool_result" => return Err(misplaced(&at, "tool_result", "user")),
            _ => turn.content.push_str(block_text(block, &at)?),
        }
    }
    Ok(turn)
}

/// A user message: a tool turn per `tool_result` block (answering `unanswered`), then a user
/// turn with its text when it has text or no results.
fn user_turns(
    content: &Content,
    at: &str,
    unanswered: &mut Unanswered,
    turns: &mut Vec<Turn>,
) -> Result<(), ApiError> {
    let blocks = match content {
        Content::Text(t) => {
            turns.push(Turn::text("user", t.clone()));
            return Ok(());
        }
        Content::Blocks(blocks) => blocks,
    };
    let mut text = None::<String>;
    let mut results = 0;
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}[{j}]");
        match block_kind(block, &at)? {
            "tool_result" if text.is_some() => {
                return Err(ApiError::invalid(
                    at,
                    "tool_result blocks must come before any other content of the message",
                ))
            }
            "tool_result" => {
                turns.push(tool_result(block, &at, unanswered)?);
                results += 1;
            }
            "tool_use" => return Err(misplaced(&at, "tool_use", "assistant")),
            _ => text
                .get_or_insert_with(String::new)
                .push_str(block_text(block, &at)?),
        }
    }
    if text.is_some() || results == 0 {
        turns.push(Turn::text("user", text.unwrap_or_default()));
    }
    Ok(())
}

/// A `tool_use` block: `id`, `name` and an `input` object.
fn tool_use(block: &ContentBlock, at: &str) -> Result<FunctionCall, ApiError> {
    refuse_fields(block, at, &["tool_use_id", "content", "is_error", "text"])?;
    let id = non_empty(block.id.as_deref()).ok_or_else(|| ApiError::required(at, "id"))?;
    let name = non_empty(block.name.as_deref()).ok_or_else(|| ApiError::required(at, "name"))?;
    let input = match &block.input {
        Some(input @ Value::Object(_)) => input,
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{at}.input"),
                "`input` must be an object",
            ))
        }
        None => return Err(ApiError::required(at, "input")),
    };
    Ok(FunctionCall {
        id: id.to_string(),
        name: name.to_string(),
        arguments: input.to_string(),
    })
}

/// A `tool_result` block as the tool turn answering its `tool_use_id`. `is_error` is accepted;
/// the result's text is rendered as it is.
fn tool_result(
    block: &ContentBlock,
    at: &str,
    unanswered: &mut Unanswered,
) -> Result<Turn, ApiError> {
    refuse_fields(block, at, &["id", "name", "input", "text"])?;
    let id = block
        .tool_use_id
        .as_deref()
        .ok_or_else(|| ApiError::required(at, "tool_use_id"))?;
    unanswered.answer(id, &format!("{at}.tool_use_id"))?;
    let content = match &block.content {
        Some(content) => text(content, &format!("{at}.content"))?,
        None => String::new(),
    };
    let mut turn = Turn::text("tool", content);
    turn.tool_call_id = Some(id.to_string());
    Ok(turn)
}

/// The tool uses of an assistant message (its content at `at`) not answered yet.
#[derive(Default)]
struct Unanswered {
    at: String,
    ids: Vec<String>,
}

impl Unanswered {
    fn answer(&mut self, id: &str, at: &str) -> Result<(), ApiError> {
        match self.ids.iter().position(|x| x == id) {
            Some(k) => {
                self.ids.remove(k);
                Ok(())
            }
            None => Err(ApiError::invalid(
                at,
                format!(
                    "tool_use_id `{id}` answers no unanswered tool_use block of the assistant \
                     message right before"
                ),
            )),
        }
    }

    /// Refuses tool uses left without a result by the message after them.
    fn refuse_any(&mut self) -> Result<(), ApiError> {
        match self.ids.first() {
            Some(id) => Err(ApiError::invalid(
                self.at.clone(),
                format!(
                    "tool_use `{id}` has no tool_result block in the user message right after \
                     it"
                ),
            )),
            None => Ok(()),
        }
    }
}

/// The text of `content` (at `at`): the string, or its text blocks joined.
fn text(content: &Content, at: &str) -> Result<String, ApiError> {
    let blocks = match content {
        Content::Text(t) => return Ok(t.clone()),
        Content::Blocks(blocks) => blocks,
    };
    let mut text = String::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}[{j}]");
        match block_kind(block, &at)? {
            kind @ ("tool_use" | "tool_result") => {
                return Err(ApiError::invalid(
                    format!("{at}.type"),
                    format!("a `{kind}` block does not belong here (text blocks only)"),
                ))
            }
            _ => text.push_str(block_text(block, &at)?),
        }
    }
    Ok(text)
}

/// The type of a block: `text`, `tool_use` or `tool_result` (others are refused).
fn block_kind<'a>(block: &'a ContentBlock, at: &str) -> Result<&'a str, ApiError> {
    match block.kind.as_deref() {
        Some(kind @ ("text" | "tool_use" | "tool_result")) => {
            refuse_unknown(&block.unknown, at)?;
            Ok(kind)
        }
        Some(kind) => Err(ApiError::invalid(
            format!("{at}.type"),
            format!("content block type `{kind}` is not supported (text, tool_use, tool_result)"),
        )),
        None => Err(ApiError::required(at, "type")),
    }
}

fn block_text<'a>(block: &'a ContentBlock, at: &str) -> Result<&'a str, ApiError> {
    refuse_fields(
        block,
        at,
        &["id", "name", "input", "tool_use_id", "content", "is_error"],
    )?;
    block
        .text
        .as_deref()
        .ok_or_else(|| ApiError::required(at, "text"))
}

/// Refuses the `fields` of `block` that are set (fields of another block type).
fn refuse_fields(block: &ContentBlock, at: &str, fields: &[&str]) -> Result<(), ApiError> {
    let set = |field: &str| match field {
        "text" => block.text.is_some(),
        "id" => block.id.is_some(),
        "name" => block.name.is_some(),
        "input" => block.input.is_some(),
        "tool_use_id" => block.tool_use_id.is_some(),
        "content" => block.content.is_some(),
        "is_error" => block.is_error.is_some(),
        _ => false,
    };
    match fields.iter().find(|f| set(f)) {
        Some(field) => Err(ApiError::unsupported_field(
            format!("{at}.{field}"),
            format!(
                "`{field}` does not belong to a `{}` block",
                block.kind.as_deref().unwrap_or_default()
            ),
        )),
        None => Ok(()),
    }
}

fn misplaced(at: &str, kind: &str, role: &str) -> ApiError {
    ApiError::invalid(
        format!("{at}.type"),
        format!("`{kind}` blocks belong to {role} messages"),
    )
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}
