//! What a request's output must match (structured outputs), and its compilation into a
//! per-sequence matcher by llguidance.

use serde_json::{json, Value};

/// An output constraint of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputConstraint {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// JSON valid under this JSON Schema.
    JsonSchema(Value),
    /// Text matching this regular expression (whole output).
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// A Lark grammar (llguidance's dialect: `start` rule, lexer regexes, `%json` etc.).
    Lark(String),
}

impl OutputConstraint {
    /// The llguidance grammar of the constraint.
    pub(crate) fn grammar(&self) -> llguidance::api::TopLevelGrammar {
        use llguidance::api::TopLevelGrammar;
        match self {
            Self::JsonObject => TopLevelGrammar::from_json_schema(with_bounded_whitespace(
                json!({"type": "object"}),
            )),
            Self::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(with_bounded_whitespace(schema.clone()))
            }
            Self::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Self::Choice(options) => {
                let alternatives: Vec<String> = options.iter().map(|o| lark_string(o)).collect();
                TopLevelGrammar::from_lark(format!("start: {}", alternatives.join(" | ")))
            }
            Self::Lark(grammar) => TopLevelGrammar::from_lark(grammar.clone()),
        }
    }

    /// The request field the constraint came from, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::JsonObject => "json_object",
            Self::JsonSchema(_) => "json_schema",
            Self::Regex(_) => "regex",
            Self::Choice(_) => "choice",
            Self::Lark(_) => "grammar",
        }
    }
}

/// Whitespace allowed between JSON tokens: one space, or one line break and at most 20 spaces or
/// tabs of indentation, so a model that prefers whitespace cannot fill its output with blank
/// lines (llama.cpp's JSON grammars bound it the same way). A schema that sets its own
/// llguidance options (`x-guidance`) keeps them.
const JSON_WHITESPACE: &str = r"(?:\x20|\x0A[\x20\x09]{0,20})";

pub(crate) fn with_bounded_whitespace(schema: Value) -> Value {
    let mut schema = match schema {
        Value::Bool(true) => json!({}),
        other => other,
    };
    if let Value::Object(map) = &mut schema {
        map.entry("x-guidance")
            .or_insert_with(|| json!({ "whitespace_pattern": JSON_WHITESPACE }));
    }
    schema
}

/// `s` as a Lark string literal.
fn lark_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::engine::structured::{ConstraintCompiler, OutputConstraint};

    /// How many characters of `text`, fed one character a token, a fresh `json_object` matcher
    /// accepts.
    fn accepted_chars(text: &str) -> usize {
        let (_, tokenizer) = epas_builtin::load_builtin(&candle_core::Device::Cpu).unwrap();
        let tokenizer = Arc::new(tokenizer);
        let vocab = tokenizer.inner().get_vocab_size(true);
        let compiler = ConstraintCompiler::new(tokenizer.clone(), vocab);
        let mut matcher = compiler.compile(&OutputConstraint::JsonObject).unwrap();
        let tokens: Vec<u32> = text
            .chars()
            .map(|c| {
                let ids = tokenizer.encode(&c.to_string()).unwrap();
                assert_eq!(ids.len(), 1, "{c:?} is one token");
                ids[0]
            })
            .collect();
        matcher.validate_tokens(&tokens).unwrap()
    }

    #[test]
    fn json_whitespace_is_one_line_break_and_bounded_indentation() {
        let indented = "{\n  \"a\": 1,\n  \"b\": [1, 2]\n}";
        assert_eq!(accepted_chars(indented), indented.chars().count());
        // A blank line, and indentation past 20 characters, are refused where they start.
        assert_eq!(accepted_chars("{\n\n"), 2);
        let deep = format!("{{\n{}", " ".repeat(21));
        assert_eq!(accepted_chars(&deep), 22);
    }
}
