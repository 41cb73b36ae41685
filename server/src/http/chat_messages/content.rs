//! A message's content as text: a string, or an array of text parts (an assistant may send one
//! refusal part instead). Images, audio and files are refused by their part type.

use super::super::error::ApiError;
use super::super::schema::{ContentPart, Message, MessageContent};
use super::refuse_unknown;
use super::role::Role;

/// The text of a message whose role needs content (system, developer, user, tool).
pub(super) fn required_text(m: &Message, role: Role, at: &str) -> Result<String, ApiError> {
    match &m.content {
        Some(content) => text(content, role, at),
        None => Err(ApiError::invalid(
            format!("{at}.content"),
            format!("`content` is required in a {} message", role.name()),
        )),
    }
}

/// The text of an assistant message: its content, else its refusal. Content may be missing
/// only when the message calls tools or carries a refusal.
pub(super) fn assistant_text(m: &Message, calls_tools: bool, at: &str) -> Result<String, ApiError> {
    match (&m.content, &m.refusal) {
        (Some(content), _) => text(content, Role::Assistant, at),
        (None, Some(refusal)) => Ok(refusal.clone()),
        (None, None) if calls_tools => Ok(String::new()),
        (None, None) => Err(ApiError::invalid(
            format!("{at}.content"),
            "`content` is required in an assistant message without `tool_calls` or `refusal`",
        )),
    }
}

fn text(content: &MessageContent, role: Role, at: &str) -> Result<String, ApiError> {
    let parts = match content {
        MessageContent::Text(t) => return Ok(t.clone()),
        MessageContent::Parts(parts) => parts,
    };
    let param = format!("{at}.content");
    if parts.is_empty() {
        return Err(ApiError::invalid(
            param,
            "`content` must be a string or a non-empty array of parts",
        ));
    }
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        let at_part = format!("{param}[{j}]");
        match part.kind.as_str() {
            "text" => text.push_str(part_field(part, "text", &at_part)?),
            "refusal" if role == Role::Assistant => {
                if parts.len() > 1 {
                    return Err(ApiError::invalid(
                        param,
                        "an assistant message's content is text parts or exactly one refusal part",
                    ));
                }
                return Ok(part_field(part, "refusal", &at_part)?.to_string());
            }
            other => {
                return Err(ApiError::invalid(
                    param,
                    format!(
                        "content part {j} has type `{other}`, which is not supported in a {} \
                         message (text parts only)",
                        role.name()
                    ),
                ))
            }
        }
    }
    Ok(text)
}

/// The `text` or `refusal` of a part whose type names that field, refusing any other field.
fn part_field<'a>(part: &'a ContentPart, field: &str, at: &str) -> Result<&'a str, ApiError> {
    let (wanted, other, other_name) = if field == "text" {
        (&part.text, &part.refusal, "refusal")
    } else {
        (&part.refusal, &part.text, "text")
    };
    if other.is_some() {
        return Err(ApiError::unsupported_field(
            format!("{at}.{other_name}"),
            format!("`{other_name}` does not belong to a {field} part"),
        ));
    }
    refuse_unknown(&part.unknown, at)?;
    wanted.as_deref().ok_or_else(|| {
        ApiError::invalid(
            format!("{at}.{field}"),
            format!("`{field}` is required in a {field} part"),
        )
    })
}
