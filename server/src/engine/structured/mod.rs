//! Structured outputs: a request may constrain its output to a JSON Schema, any JSON object, a
//! regular expression, a choice of strings or a Lark grammar. llguidance compiles the constraint
//! into a matcher (in the validation step, off the engine thread); each step the sampler picks a
//! token the matcher allows (checking its usual pick first, computing the full token mask only
//! when it must), and the chosen token advances the matcher.

mod compiler;
mod constraint;
mod filter;
mod tokenizer_env;

pub(crate) use compiler::{CompileError, ConstraintCompiler};
pub(crate) use constraint::with_bounded_whitespace;
pub use constraint::OutputConstraint;
pub(crate) use filter::{as_matcher_token, MatcherFilter};

/// A constraint with the request field it came from (named in errors).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestConstraint {
    pub field: &'static str,
    pub output: OutputConstraint,
}
