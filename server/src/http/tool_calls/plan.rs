//! What tool calling changes in a chat request: the prompt shows the tools, `required` and a
//! named function constrain the output, and the output is read for calls.

use epas_model::TextTokenizer;

use super::super::conversation::Turn;
use super::super::error::ApiError;
use super::constraint::tool_constraint;
use super::convention::{Convention, TemplateTools};
use super::output::ToolOutput;
use super::render::render_prompt;
use super::tools::ToolRequest;
use crate::engine::RequestConstraint;

pub(crate) struct ToolPlan {
    request: Option<ToolRequest>,
    convention: Convention,
}

impl ToolPlan {
    /// The plan of `request` (`None`: no tools) for the model of `tokenizer`.
    pub fn new(request: Option<ToolRequest>, tokenizer: &TextTokenizer) -> Self {
        let convention = TemplateTools::of(tokenizer.chat_template.as_deref()).convention();
        Self {
            request,
            convention,
        }
    }

    /// The prompt of `turns` with the tools shown to the model.
    pub fn prompt(
        &self,
        tokenizer: &TextTokenizer,
        turns: &[Turn],
        add_generation_prompt: bool,
    ) -> Result<String, ApiError> {
        let tools = self.request.as_ref().and_then(ToolRequest::shown);
        render_prompt(tokenizer, turns, tools, add_generation_prompt)
    }

    /// The request's output constraint: the calls' when the choice forces them, else `other`
    /// (a structured output). Both at once is a 400 naming `other`'s field.
    pub fn constraint(
        &self,
        other: Option<RequestConstraint>,
    ) -> Result<Option<RequestConstraint>, ApiError> {
        let forced = self
            .request
            .as_ref()
            .and_then(|r| tool_constraint(r, self.convention));
        match (forced, other) {
            (Some(_), Some(other)) => Err(ApiError::invalid(
                other.field,
                format!(
                    "`{}` cannot be combined with tool_choice `required` or a named function, \
                     which constrain the output to tool calls",
                    other.field
                ),
            )),
            (forced, other) => Ok(forced.or(other)),
        }
    }

    /// How the output is read for calls (`None`: not at all).
    pub fn output(&self) -> Option<ToolOutput> {
        self.request
            .as_ref()
            .and_then(|r| ToolOutput::new(r, self.convention))
    }
}
