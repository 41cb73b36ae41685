//! Structured outputs: a request may constrain its output to a JSON Schema, any JSON object, a
//! regular expression, a choice of strings or a Lark grammar. llguidance compiles the constraint
//! into a matcher (in the validation step, off the engine thread); each step the matcher's token
//! mask restricts the sampler, and the chosen token advances it.

mod compiler;
mod constraint;
mod tokenizer_env;

pub(crate) use compiler::ConstraintCompiler;
pub(crate) use constraint::with_bounded_whitespace;
pub use constraint::OutputConstraint;

/// A constraint with the request field it came from (named in errors).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestConstraint {
    pub field: &'static str,
    pub output: OutputConstraint,
}
