//! Chat messages checked as OpenAI checks them (roles, the content each role needs, the fields
//! that belong to each role, tool messages answering tool calls), then turned into the text
//! turns the chat template renders. Every refusal is a 400 whose `param` names the field.

mod content;
mod role;
mod tool_calls;

use epas_model::ChatMessage;

use super::error::ApiError;
use super::schema::{Message, UnknownFields};
use content::{assistant_text, required_text};
use role::Role;
use tool_calls::{call_ids, PendingCalls};

#[cfg(test)]
mod tests;

/// The turns of `messages` as plain text, or the first thing OpenAI would refuse (or this
/// server cannot render yet, such as tool calls).
pub fn chat_messages(messages: &[Message]) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid("messages", "messages must not be empty"));
    }
    let mut calls = PendingCalls::default();
    let mut turns = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = Role::of(m, &at)?;
        check_fields(m, role, &at)?;
        let text = match role {
            Role::Assistant => {
                calls.all_answered()?;
                let ids = call_ids(m.tool_calls.as_deref().unwrap_or_default(), &at)?;
                let text = assistant_text(m, !ids.is_empty(), &at)?;
                calls.open(i, ids);
                text
            }
            Role::Tool => {
                calls.answer(m.tool_call_id.as_deref(), &at)?;
                required_text(m, role, &at)?
            }
            _ => {
                calls.all_answered()?;
                required_text(m, role, &at)?
            }
        };
        turns.push(ChatMessage {
            role: role.template_name().to_string(),
            content: text,
        });
    }
    calls.all_answered()?;
    calls.refuse_any()?;
    Ok(turns)
}

/// Refuses fields that belong to another role, fields no message has, and the assistant fields
/// this server cannot take.
fn check_fields(m: &Message, role: Role, at: &str) -> Result<(), ApiError> {
    let assistant = role == Role::Assistant;
    let placed = [
        ("name", m.name.is_some(), role != Role::Tool),
        ("refusal", m.refusal.is_some(), assistant),
        ("tool_calls", m.tool_calls.is_some(), assistant),
        ("tool_call_id", m.tool_call_id.is_some(), role == Role::Tool),
        ("audio", m.audio.is_some(), assistant),
        ("function_call", m.function_call.is_some(), assistant),
    ];
    for (field, present, belongs) in placed {
        if present && !belongs {
            return Err(ApiError::unsupported_field(
                format!("{at}.{field}"),
                format!("`{field}` does not belong to a {} message", role.name()),
            ));
        }
    }
    refuse_unknown(&m.unknown, at)?;
    if m.audio.is_some() {
        return Err(ApiError::invalid(
            format!("{at}.audio"),
            "`audio` (a previous audio response) is not supported",
        ));
    }
    if m.function_call.is_some() {
        return Err(ApiError::invalid(
            format!("{at}.function_call"),
            "`function_call` is deprecated (replaced by `tool_calls`) and not supported",
        ));
    }
    Ok(())
}

/// Refuses the first key of `unknown`, named under `at`.
pub(super) fn refuse_unknown(unknown: &UnknownFields, at: &str) -> Result<(), ApiError> {
    match unknown.keys().next() {
        None => Ok(()),
        Some(key) => Err(ApiError::unsupported_field(
            format!("{at}.{key}"),
            format!("unsupported field `{key}`"),
        )),
    }
}
