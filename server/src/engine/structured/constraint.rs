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

/// Whitespace allowed between JSON tokens: at most 20 characters, so a model that prefers
/// whitespace cannot fill its whole output with it (llama.cpp bounds it the same way). A schema
/// that sets its own llguidance options (`x-guidance`) keeps them.
const JSON_WHITESPACE: &str = r"[\x20\x0A\x0D\x09]{1,20}";

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
