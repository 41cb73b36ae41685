//! Chat messages checked as OpenAI checks them (roles, the content each role needs, the fields
//! that belong to each role, tool messages answering tool calls), then turned into the turns the
//! chat template renders. Every refusal is a 400 whose `param` names the field.

mod content;
mod role;
mod tool_calls;

use super::body::refuse_unknown;
use super::conversation::Turn;
use super::error::ApiError;
use super::schema::Message;
use content::{assistant_text, required_text};
use role::Role;
use tool_calls::{checked_calls, PendingCalls};

#[cfg(test)]
mod tests;

/// The turns of `messages`, or the first thing OpenAI would refuse.
pub fn chat_messages(messages: &[Message]) -> Result<Vec<Turn>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid("messages", "messages must not be empty"));
    }
    let mut pending = PendingCalls::default();
    let mut turns = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = Role::of(m, &at)?;
        check_fields(m, role, &at)?;
        let mut turn = Turn::text(role.template_name(), String::new());
        match role {
            Role::Assistant => {
                pending.all_answered()?;
                let calls = checked_calls(m.tool_calls.as_deref().unwrap_or_default(), &at)?;
                turn.content = assistant_text(m, !calls.is_empty(), &at)?;
                pending.open(i, calls.iter().map(|c| c.id.clone()).collect());
                turn.tool_calls = calls;
            }
            Role::Tool => {
                pending.answer(m.tool_call_id.as_deref(), &at)?;
                turn.content = required_text(m, role, &at)?;
                turn.tool_call_id = m.tool_call_id.clone();
            }
            _ => {
                pending.all_answered()?;
                turn.content = required_text(m, role, &at)?;
            }
        }
        turns.push(turn);
    }
    pending.all_answered()?;
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
