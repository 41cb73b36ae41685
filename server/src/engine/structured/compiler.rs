//! Compiles output constraints into llguidance matchers over the model's tokenizer. The
//! tokenizer's trie and llguidance's tables are built once, at the first constrained request.

use std::sync::{Arc, OnceLock};

use epas_model::TextTokenizer;
use llguidance::{Matcher, ParserFactory};

use super::constraint::OutputConstraint;
use super::tokenizer_env::token_env;

pub(crate) struct ConstraintCompiler {
    tokenizer: Arc<TextTokenizer>,
    vocab_size: usize,
    factory: OnceLock<Result<ParserFactory, String>>,
}

impl ConstraintCompiler {
    pub fn new(tokenizer: Arc<TextTokenizer>, vocab_size: usize) -> Self {
        Self {
            tokenizer,
            vocab_size,
            factory: OnceLock::new(),
        }
    }

    fn factory(&self) -> Result<&ParserFactory, String> {
        self.factory
            .get_or_init(|| {
                let env = token_env(self.tokenizer.clone(), self.vocab_size)?;
                let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
                factory.quiet();
                set_limits(factory.limits_mut());
                Ok(factory)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A matcher at the start of `constraint`'s language whose first token mask has been
    /// computed: a constraint that does not compile, exceeds llguidance's limits (grammar size,
    /// lexer states and fuel) or allows no first token is an error here, before generation.
    pub fn compile(&self, constraint: &OutputConstraint) -> Result<Matcher, CompileError> {
        let factory = self.factory().map_err(|e| {
            CompileError::Unavailable(format!("output constraints are unavailable: {e}"))
        })?;
        let mut matcher = Matcher::new(factory.create_parser(constraint.grammar()));
        if let Some(error) = matcher.get_error() {
            return Err(CompileError::Refused(error));
        }
        let mask = matcher
            .compute_mask()
            .map_err(|e| CompileError::Refused(e.to_string()))?;
        if mask.is_zero() {
            return Err(CompileError::Refused(
                "the constraint allows no output".into(),
            ));
        }
        Ok(matcher)
    }
}

/// Why a constraint gives no matcher: the constraint's own fault, or the server's (llguidance
/// cannot read this model's tokenizer, for every constraint alike).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CompileError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Unavailable(String),
}

/// Bounds on what one constraint may cost, so that a too-large schema or grammar is refused at
/// compilation instead of taking the server's memory or the engine thread's time (llguidance's
/// defaults allow about 0.5 GB of lexer states per request).
fn set_limits(limits: &mut llguidance::api::ParserLimits) {
    // Symbols in the grammar's productions (llguidance's default: large real schemas such as
    // FHIR's take 200,000).
    limits.max_grammar_size = 500_000;
    // 1-2 kB each.
    limits.max_lexer_states = 50_000;
    // Per token mask: about 15 ms of lexing and 2.5 ms of parsing at most.
    limits.step_lexer_fuel = 200_000;
    limits.step_max_items = 50_000;
    // Errors name the problem without the parser's state and the whole grammar.
    limits.verbose_errors = false;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokenizer_llguidance_cannot_use_makes_constraints_unavailable_not_refused() {
        let (_, tokenizer) = epas_builtin::load_builtin(&candle_core::Device::Cpu).unwrap();
        let tokenizer = Arc::new(tokenizer);
        let too_few_logits = ConstraintCompiler::new(tokenizer.clone(), 10);
        match too_few_logits.compile(&OutputConstraint::JsonObject) {
            Err(CompileError::Unavailable(message)) => {
                assert!(message.contains("unavailable"), "{message}")
            }
            other => panic!("expected Unavailable, got {:?}", other.map(|_| ())),
        }
        let vocab = tokenizer.inner().get_vocab_size(true);
        let compiler = ConstraintCompiler::new(tokenizer, vocab);
        match compiler.compile(&OutputConstraint::Regex("(unclosed".into())) {
            Err(CompileError::Refused(_)) => {}
            other => panic!("expected Refused, got {:?}", other.map(|_| ())),
        }
    }
}
