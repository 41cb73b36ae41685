//! OpenAI's message roles.

use super::super::error::ApiError;
use super::super::schema::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

impl Role {
    /// The role of `m` (at `at`), refusing a missing, unknown or deprecated one.
    pub(super) fn of(m: &Message, at: &str) -> Result<Role, ApiError> {
        let param = || format!("{at}.role");
        match m.role.as_deref() {
            None => Err(ApiError::invalid(param(), "`role` is required")),
            Some("system") => Ok(Role::System),
            Some("developer") => Ok(Role::Developer),
            Some("user") => Ok(Role::User),
            Some("assistant") => Ok(Role::Assistant),
            Some("tool") => Ok(Role::Tool),
            Some("function") => Err(ApiError::invalid(
                param(),
                "role `function` is deprecated (replaced by `tool`) and not supported",
            )),
            Some(other) => Err(ApiError::invalid(
                param(),
                format!(
                    "role `{other}` is not supported (system, developer, user, assistant, tool)"
                ),
            )),
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    /// The role the chat template gets: templates know `system`, not OpenAI's newer
    /// `developer`.
    pub(super) fn template_name(self) -> &'static str {
        match self {
            Role::Developer => Role::System.name(),
            other => other.name(),
        }
    }
}
