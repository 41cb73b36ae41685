//! The output constraint of `tool_choice` `required` or a named function: a Lark grammar whose
//! language is the convention's call syntax, with each function's arguments as JSON valid under
//! its `parameters` schema (llguidance's `%json`), so that a forced call always parses.

use super::convention::Convention;
use super::tools::ToolRequest;
use crate::engine::{with_bounded_whitespace, OutputConstraint, RequestConstraint};

/// The constraint that forces `request`'s calls, if its choice forces any. Compile errors (a
/// `parameters` schema llguidance cannot take) name `tools`.
pub(crate) fn tool_constraint(
    request: &ToolRequest,
    convention: Convention,
) -> Option<RequestConstraint> {
    let tools = request.enforced()?;
    let alternatives: Vec<String> = (0..tools.len()).map(|i| format!("call_{i}")).collect();
    let mut grammar = match request.max_calls() {
        None => format!(
            "start: call ({} call)*\n",
            lark_string(convention.call_separator())
        ),
        Some(_) => "start: call\n".to_string(),
    };
    grammar.push_str(&format!("call: {}\n", alternatives.join(" | ")));
    for (i, tool) in tools.iter().enumerate() {
        let schema = with_bounded_whitespace(tool.arguments_schema());
        grammar.push_str(&format!(
            "call_{i}: {} arguments_{i} {}\narguments_{i}: %json {schema}\n",
            lark_string(&convention.call_prefix(&tool.name)),
            lark_string(convention.call_suffix()),
        ));
    }
    Some(RequestConstraint {
        field: "tools",
        output: OutputConstraint::Lark(grammar),
    })
}

/// `s` as a Lark string literal (JSON's escapes).
fn lark_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, OnceLock};

    use epas_model::TextTokenizer;
    use serde_json::json;

    use super::*;
    use crate::engine::ConstraintCompiler;
    use crate::http::tool_calls::tools::{FunctionTool, ToolChoice};

    fn request(choice: ToolChoice, parallel: bool) -> ToolRequest {
        ToolRequest {
            tools: vec![
                FunctionTool {
                    name: "get_weather".into(),
                    description: None,
                    parameters: Some(json!({"type": "object",
                        "properties": {"city": {"type": "string", "maxLength": 12},
                                       "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                        "required": ["city"], "additionalProperties": false})),
                    strict: Some(true),
                },
                FunctionTool {
                    name: "now".into(),
                    description: None,
                    parameters: None,
                    strict: None,
                },
            ],
            choice,
            parallel,
        }
    }

    /// The built-in model's tokenizer and a compiler over it.
    fn compiler() -> &'static (Arc<TextTokenizer>, ConstraintCompiler) {
        static C: OnceLock<(Arc<TextTokenizer>, ConstraintCompiler)> = OnceLock::new();
        C.get_or_init(|| {
            let (_, tokenizer) = epas_builtin::load_builtin(&candle_core::Device::Cpu).unwrap();
            let tokenizer = Arc::new(tokenizer);
            let vocab = tokenizer.inner().get_vocab_size(true);
            (tokenizer.clone(), ConstraintCompiler::new(tokenizer, vocab))
        })
    }

    /// Whether the constraint of `request` accepts exactly `text`.
    fn accepts(request: &ToolRequest, convention: Convention, text: &str) -> bool {
        let (tokenizer, compiler) = compiler();
        let constraint = tool_constraint(request, convention).expect("a constraint");
        assert_eq!(constraint.field, "tools");
        let mut matcher = compiler.compile(&constraint.output).unwrap();
        let tokens = tokenizer
            .inner()
            .encode(text, false)
            .unwrap()
            .get_ids()
            .to_vec();
        matcher.validate_tokens(&tokens).unwrap() == tokens.len()
            && matcher.consume_tokens(&tokens).is_ok()
            && matcher.is_accepting().unwrap()
    }

    const PARIS: &str = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 3}}\n</tool_call>";
    const NOW: &str = "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";

    #[test]
    fn required_accepts_calls_of_any_tool_with_valid_arguments_only() {
        use Convention::Hermes;
        let required = request(ToolChoice::Required, true);
        assert!(accepts(&required, Hermes, PARIS));
        assert!(accepts(&required, Hermes, NOW));
        assert!(accepts(&required, Hermes, &format!("{PARIS}\n{NOW}")));
        for wrong in [
            "",
            "It is sunny.",
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"days\": 3}}\n</tool_call>",
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 9}}\n</tool_call>",
            "<tool_call>\n{\"name\": \"now\", \"arguments\": {\"x\": 1}}\n</tool_call>",
            "<tool_call>\n{\"name\": \"later\", \"arguments\": {}}\n</tool_call>",
        ] {
            assert!(!accepts(&required, Hermes, wrong), "{wrong:?}");
        }
        let single = request(ToolChoice::Required, false);
        assert!(accepts(&single, Hermes, NOW));
        assert!(!accepts(&single, Hermes, &format!("{PARIS}\n{NOW}")));
    }

    #[test]
    fn a_named_function_allows_one_call_of_it() {
        use Convention::*;
        let named = request(ToolChoice::Function("get_weather".into()), true);
        assert!(accepts(&named, Hermes, PARIS));
        assert!(!accepts(&named, Hermes, NOW));
        assert!(!accepts(&named, Hermes, &format!("{PARIS}\n{PARIS}")));
        assert!(accepts(
            &named,
            Llama3Json,
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}"
        ));
        assert!(!accepts(&named, Llama3Json, PARIS));
    }

    #[test]
    fn auto_and_none_constrain_nothing() {
        for choice in [ToolChoice::Auto, ToolChoice::None] {
            assert_eq!(
                tool_constraint(&request(choice, true), Convention::Hermes),
                None
            );
        }
    }
}
