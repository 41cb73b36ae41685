//! Assistant tool calls and the tool messages that answer them, checked as OpenAI checks them:
//! the tool messages right after an assistant message answer each of its calls by id.

use std::collections::HashSet;

use super::super::error::ApiError;
use super::super::schema::ToolCall;
use super::super::tool_calls::FunctionCall;
use super::refuse_unknown;

/// The calls of an assistant message (at `at`), refusing malformed ones.
pub(super) fn checked_calls(calls: &[ToolCall], at: &str) -> Result<Vec<FunctionCall>, ApiError> {
    let mut checked = Vec::with_capacity(calls.len());
    let mut seen = HashSet::new();
    for (j, call) in calls.iter().enumerate() {
        let at = format!("{at}.tool_calls[{j}]");
        match call.kind.as_deref() {
            Some("function") => {}
            None => return Err(ApiError::required(&at, "type")),
            Some(other) => {
                return Err(ApiError::invalid(
                    format!("{at}.type"),
                    format!("tool call type `{other}` is not supported (function only)"),
                ))
            }
        }
        refuse_unknown(&call.unknown, &at)?;
        let id = non_empty(call.id.as_deref()).ok_or_else(|| ApiError::required(&at, "id"))?;
        if !seen.insert(id) {
            return Err(ApiError::invalid(
                format!("{at}.id"),
                format!("tool call id `{id}` appears twice in this message"),
            ));
        }
        let function = call
            .function
            .as_ref()
            .ok_or_else(|| ApiError::required(&at, "function"))?;
        let at_function = format!("{at}.function");
        refuse_unknown(&function.unknown, &at_function)?;
        let name = non_empty(function.name.as_deref())
            .ok_or_else(|| ApiError::required(&at_function, "name"))?;
        let arguments = function
            .arguments
            .as_ref()
            .ok_or_else(|| ApiError::required(&at_function, "arguments"))?;
        checked.push(FunctionCall {
            id: id.to_string(),
            name: name.to_string(),
            arguments: arguments.clone(),
        });
    }
    Ok(checked)
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// The calls of the latest assistant message that no tool message has answered yet.
#[derive(Default)]
pub(super) struct PendingCalls {
    /// The assistant message's index and its unanswered call ids.
    open: Option<(usize, Vec<String>)>,
}

impl PendingCalls {
    /// Starts waiting for the answers to message `index`'s calls.
    pub(super) fn open(&mut self, index: usize, ids: Vec<String>) {
        if !ids.is_empty() {
            self.open = Some((index, ids));
        }
    }

    /// Takes the answer of a tool message (at `at`) to one open call.
    pub(super) fn answer(&mut self, id: Option<&str>, at: &str) -> Result<(), ApiError> {
        let id = id.ok_or_else(|| ApiError::required(at, "tool_call_id"))?;
        let open = self.open.as_mut().map(|(_, ids)| ids);
        match open.and_then(|ids| Some((ids.iter().position(|x| x == id)?, ids))) {
            Some((k, ids)) => {
                ids.remove(k);
                Ok(())
            }
            None => Err(ApiError::invalid(
                format!("{at}.tool_call_id"),
                format!(
                    "tool_call_id `{id}` answers no unanswered tool call of the assistant \
                     message before it"
                ),
            )),
        }
    }

    /// Refuses calls left unanswered when a message other than a tool answer comes (or the
    /// conversation ends).
    pub(super) fn all_answered(&mut self) -> Result<(), ApiError> {
        match self.open.take() {
            Some((index, ids)) if !ids.is_empty() => Err(ApiError::invalid(
                format!("messages[{index}].tool_calls"),
                format!(
                    "tool call `{}` is not answered by a tool message right after this message",
                    ids[0]
                ),
            )),
            _ => Ok(()),
        }
    }
}
