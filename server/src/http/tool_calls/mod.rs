//! Tool calling: a request offers functions (OpenAI chat's `tools`, `tool_choice`,
//! `parallel_tool_calls`); the prompt shows them through the model's chat template, or in the
//! Hermes convention when the template knows no tools; `required` and a named function are
//! enforced by a grammar over the convention's call syntax and each function's `parameters`
//! schema; the generated text is read into content and calls, whole or as it streams.
//!
//! The core (tools and choices, their checks, rendering, the constraint, reading calls) knows no
//! API's shapes; `openai_request` and `openai_response` hold OpenAI's chat shapes, and the
//! Anthropic Messages API reads its own (`anthropic/tools.rs`, `anthropic/format.rs`).

mod checks;
mod constraint;
mod convention;
mod openai_request;
mod openai_response;
mod output;
mod plan;
mod read_calls;
mod render;
mod split;
mod tools;

pub(crate) use checks::{
    choice_mode, chosen_function, function_name, function_type, object_schema, tool_list,
};
#[cfg(test)]
pub(crate) use convention::Convention;
pub(crate) use openai_request::ToolParams;
pub(crate) use openai_response::{answer_choice, finish_reason, piece_chunks};
pub(crate) use output::{CallStream, Piece, ReadOutput, ToolOutput};
pub(crate) use plan::ToolPlan;
pub(crate) use render::render_prompt;
pub(crate) use tools::{FunctionCall, FunctionTool, ToolChoice, ToolRequest};
