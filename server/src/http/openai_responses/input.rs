//! `instructions` and `input` as the turns the chat template renders: a string is one user
//! message; items are messages with role `user`, `system`, `developer` (rendered as `system`)
//! or `assistant`, whose content is a string or `input_text` parts (`output_text` parts for
//! the assistant); `function_call` items are the calls an earlier answer made (joined to the
//! assistant turn before them) and `function_call_output` items answer them by `call_id`, all
//! before the next message (an assistant message right after the calls is the same answer's
//! text, as a streamed response outputs it, and joins their turn). Images, files and audio are refused by part type.

use super::super::body::refuse_unknown;
use super::super::conversation::Turn;
use super::super::error::ApiError;
use super::super::schema::UnknownFields;
use super::super::tool_calls::FunctionCall;
use super::request::{ContentPart, Input, InputItem, ItemContent};

pub fn conversation(instructions: Option<&str>, input: &Input) -> Result<Vec<Turn>, ApiError> {
    let mut turns = Vec::new();
    if let Some(instructions) = instructions {
        turns.push(Turn::text("system", instructions));
    }
    match input {
        Input::Text(text) => turns.push(Turn::text("user", text.clone())),
        Input::Items(items) if items.is_empty() => {
            return Err(ApiError::invalid("input", "input must not be empty"))
        }
        Input::Items(items) => {
            let mut unanswered = Unanswered::default();
            for (i, item) in items.iter().enumerate() {
                let at = format!("input[{i}]");
                match item.kind.as_deref() {
                    None | Some("message") => {
                        let turn = message(item, &at)?;
                        // An answer's text after its calls, sent back as a response output it.
                        let open_answer = turns
                            .last_mut()
                            .filter(|t| t.role == "assistant" && !unanswered.calls.is_empty());
                        match open_answer {
                            Some(answer) if turn.role == "assistant" => {
                                answer.content.push_str(&turn.content)
                            }
                            _ => {
                                unanswered.refuse_any()?;
                                turns.push(turn);
                            }
                        }
                    }
                    Some("function_call") => {
                        let call = function_call(item, &at)?;
                        unanswered.add(&call.id, &at)?;
                        match turns.last_mut() {
                            Some(last) if last.role == "assistant" => last.tool_calls.push(call),
                            _ => {
                                let mut turn = Turn::text("assistant", String::new());
                                turn.tool_calls.push(call);
                                turns.push(turn);
                            }
                        }
                    }
                    Some("function_call_output") => {
                        let (id, output) = function_call_output(item, &at)?;
                        unanswered.answer(&id, &at)?;
                        let mut turn = Turn::text("tool", output);
                        turn.tool_call_id = Some(id);
                        turns.push(turn);
                    }
                    Some(kind) => {
                        return Err(ApiError::invalid(
                            format!("{at}.type"),
                            format!(
                                "input item type `{kind}` is not supported (message, \
                                 function_call, function_call_output)"
                            ),
                        ))
                    }
                }
            }
            unanswered.refuse_any()?;
        }
    }
    Ok(turns)
}

/// The calls made since the last message that no `function_call_output` has answered yet.
#[derive(Default)]
struct Unanswered {
    /// Each call's id and the item that made it.
    calls: Vec<(String, String)>,
}

impl Unanswered {
    fn add(&mut self, id: &str, at: &str) -> Result<(), ApiError> {
        if self.calls.iter().any(|(open, _)| open == id) {
            return Err(ApiError::invalid(
                format!("{at}.call_id"),
                format!("call_id `{id}` is used by an earlier function_call"),
            ));
        }
        self.calls.push((id.to_string(), at.to_string()));
        Ok(())
    }

    fn answer(&mut self, id: &str, at: &str) -> Result<(), ApiError> {
        match self.calls.iter().position(|(open, _)| open == id) {
            Some(k) => {
                self.calls.remove(k);
                Ok(())
            }
            None => Err(ApiError::invalid(
                format!("{at}.call_id"),
                format!("call_id `{id}` answers no unanswered function_call before it"),
            )),
        }
    }

    /// Refuses calls left unanswered when a message comes (or the input ends).
    fn refuse_any(&self) -> Result<(), ApiError> {
        match self.calls.first() {
            Some((id, at)) => Err(ApiError::invalid(
                format!("{at}.call_id"),
                format!("function call `{id}` has no function_call_output after it"),
            )),
            None => Ok(()),
        }
    }
}

/// A non-empty string field of an item (`call_id`, `name`...).
fn required<'a>(value: Option<&'a str>, at: &str, field: &str) -> Result<&'a str, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::required(at, field))
}

/// Refuses the fields of `item` that its type does not take.
fn refuse_misplaced(
    item: &InputItem,
    at: &str,
    misplaced: &[(&str, bool)],
) -> Result<(), ApiError> {
    refuse_unknown(&item.unknown, at)?;
    match misplaced.iter().find(|(_, present)| *present) {
        Some((field, _)) => Err(ApiError::unsupported_field(
            format!("{at}.{field}"),
            format!("`{field}` does not belong to an input item of this type"),
        )),
        None => Ok(()),
    }
}

fn function_call(item: &InputItem, at: &str) -> Result<FunctionCall, ApiError> {
    refuse_misplaced(
        item,
        at,
        &[
            ("role", item.role.is_some()),
            ("content", item.content.is_some()),
            ("output", item.output.is_some()),
        ],
    )?;
    Ok(FunctionCall {
        id: required(item.call_id.as_deref(), at, "call_id")?.to_string(),
        name: required(item.name.as_deref(), at, "name")?.to_string(),
        arguments: item
            .arguments
            .clone()
            .ok_or_else(|| ApiError::required(at, "arguments"))?,
    })
}

/// The `call_id` a `function_call_output` answers and its output text.
fn function_call_output(item: &InputItem, at: &str) -> Result<(String, String), ApiError> {
    refuse_misplaced(
        item,
        at,
        &[
            ("role", item.role.is_some()),
            ("content", item.content.is_some()),
            ("name", item.name.is_some()),
            ("arguments", item.arguments.is_some()),
        ],
    )?;
    let id = required(item.call_id.as_deref(), at, "call_id")?.to_string();
    let at_output = format!("{at}.output");
    let output = match &item.output {
        None => return Err(ApiError::required(at, "output")),
        Some(content) => content_text(content, "input_text", &at_output)?,
    };
    Ok((id, output))
}

fn message(item: &InputItem, at: &str) -> Result<Turn, ApiError> {
    refuse_misplaced(
        item,
        at,
        &[
            ("call_id", item.call_id.is_some()),
            ("name", item.name.is_some()),
            ("arguments", item.arguments.is_some()),
            ("output", item.output.is_some()),
        ],
    )?;
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
        Some(content) => content_text(content, part_kind, &at_content)?,
    };
    Ok(Turn::text(role, text))
}

/// A string, or the text of parts all of type `part_kind`.
fn content_text(content: &ItemContent, part_kind: &str, at: &str) -> Result<String, ApiError> {
    match content {
        ItemContent::Text(text) => Ok(text.clone()),
        ItemContent::Parts(parts) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                text.push_str(part_text(part, part_kind, &format!("{at}[{j}]"))?);
            }
            Ok(text)
        }
    }
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
