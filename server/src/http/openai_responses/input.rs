//! `instructions` and `input` as the turns the chat template renders: a string is one user
//! message; items are messages with role `user`, `system`, `developer` (rendered as `system`)
//! or `assistant`, whose content is a string or `input_text` parts (`output_text` parts for
//! the assistant). Images, files and audio are refused by part type.

use epas_model::ChatMessage;

use super::super::body::refuse_unknown;
use super::super::error::ApiError;
use super::super::schema::UnknownFields;
use super::request::{ContentPart, Input, InputItem, ItemContent};
use super::tools::refuse_tool_item;

pub fn conversation(
    instructions: Option<&str>,
    input: &Input,
) -> Result<Vec<ChatMessage>, ApiError> {
    let mut turns = Vec::new();
    if let Some(instructions) = instructions {
        turns.push(turn("system", instructions.to_string()));
    }
    match input {
        Input::Text(text) => turns.push(turn("user", text.clone())),
        Input::Items(items) if items.is_empty() => {
            return Err(ApiError::invalid("input", "input must not be empty"))
        }
        Input::Items(items) => {
            for (i, item) in items.iter().enumerate() {
                turns.push(message(item, &format!("input[{i}]"))?);
            }
        }
    }
    Ok(turns)
}

fn turn(role: &str, content: String) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content,
    }
}

fn message(item: &InputItem, at: &str) -> Result<ChatMessage, ApiError> {
    match item.kind.as_deref() {
        None | Some("message") => {}
        Some(kind) => {
            refuse_tool_item(kind, at)?;
            return Err(ApiError::invalid(
                format!("{at}.type"),
                format!("input item type `{kind}` is not supported (message only)"),
            ));
        }
    }
    refuse_unknown(&item.unknown, at)?;
    let (role, part_kind) = match item.role.as_deref() {
        Some("user") => ("user", "input_text"),
        Some("system") | Some("developer") => ("system", "input_text"),
        Some("assistant") => ("assistant", "output_text"),
        Some(other) => {
            return Err(ApiError::invalid(
                format!("{at}.role"),
                format!("role `{other}` is not supported (user, system, developer, assistant)"),
            ))
        }
        None => {
            return Err(ApiError::invalid(
                format!("{at}.role"),
                "`role` is required",
            ))
        }
    };
    let at_content = format!("{at}.content");
    let text = match &item.content {
        None => return Err(ApiError::invalid(at_content, "`content` is required")),
        Some(ItemContent::Text(text)) => text.clone(),
        Some(ItemContent::Parts(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                text.push_str(part_text(part, part_kind, &format!("{at_content}[{j}]"))?);
            }
            text
        }
    };
    Ok(turn(role, text))
}

/// The text of a part that must be of type `wanted`.
fn part_text<'a>(part: &'a ContentPart, wanted: &str, at: &str) -> Result<&'a str, ApiError> {
    match part.kind.as_deref() {
        Some(kind) if kind == wanted => {}
        Some(kind) => {
            return Err(ApiError::invalid(
                format!("{at}.type"),
                format!("content part type `{kind}` is not supported here ({wanted} only)"),
            ))
        }
        None => {
            return Err(ApiError::invalid(
                format!("{at}.type"),
                "`type` is required",
            ))
        }
    }
    // An earlier response's output text carries its annotations and logprobs; not used.
    let unknown: UnknownFields = part
        .unknown
        .iter()
        .filter(|(key, _)| {
            wanted != "output_text" || !matches!(key.as_str(), "annotations" | "logprobs")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    refuse_unknown(&unknown, at)?;
    part.text
        .as_deref()
        .ok_or_else(|| ApiError::invalid(format!("{at}.text"), "`text` is required"))
}
