//! How a model writes tool calls, and whether its chat template renders tools itself. Both are
//! read from the template's text:
//!
//! - Hermes (Hermes 2/3, Qwen 2.5/3 and others): each call is
//!   `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`.
//! - Llama 3.1-3.3 (a template with `<|start_header_id|>` and `"parameters"`): the answer is
//!   the call itself, `{"name": ..., "parameters": {...}}`, several separated by `; `.
//!
//! A template that mentions both `tools` and `tool_calls` renders them ([`TemplateTools::Native`]);
//! any other (SmolLM2's plain ChatML) gets them written into the prompt in the Hermes convention
//! ([`TemplateTools::Prompted`]).

use epas_model::python_json_string;
use serde_json::Value;

use super::tools::FunctionCall;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Convention {
    Hermes,
    Llama3Json,
}

impl Convention {
    /// The text of a call of `name` before its arguments object.
    pub fn call_prefix(self, name: &str) -> String {
        let name = python_json_string(name, None, false).expect("a string serialises");
        match self {
            Self::Hermes => format!("<tool_call>\n{{\"name\": {name}, \"arguments\": "),
            Self::Llama3Json => format!("{{\"name\": {name}, \"parameters\": "),
        }
    }

    /// The text of a call after its arguments object.
    pub fn call_suffix(self) -> &'static str {
        match self {
            Self::Hermes => "}\n</tool_call>",
            Self::Llama3Json => "}",
        }
    }

    /// What stands between two calls of one answer.
    pub fn call_separator(self) -> &'static str {
        match self {
            Self::Hermes => "\n",
            Self::Llama3Json => "; ",
        }
    }

    /// `calls` as the model writes them (arguments that are not JSON are written as given).
    pub fn calls_text(self, calls: &[FunctionCall]) -> String {
        let texts: Vec<String> = calls
            .iter()
            .map(|c| {
                let arguments = serde_json::from_str::<Value>(&c.arguments)
                    .ok()
                    .and_then(|v| python_json_string(&v, None, false).ok())
                    .unwrap_or_else(|| c.arguments.clone());
                format!(
                    "{}{arguments}{}",
                    self.call_prefix(&c.name),
                    self.call_suffix()
                )
            })
            .collect();
        texts.join(self.call_separator())
    }
}

/// Whether a chat template renders tools itself, and in which convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TemplateTools {
    /// The template takes `tools`, assistant `tool_calls` and `tool` messages.
    Native(Convention),
    /// The template knows only text turns: tools, calls and results are written into them in
    /// the Hermes convention.
    Prompted,
}

impl TemplateTools {
    pub fn of(template: Option<&str>) -> Self {
        let Some(t) = template else {
            return Self::Prompted;
        };
        if !(t.contains("tools") && t.contains("tool_calls")) {
            return Self::Prompted;
        }
        if t.contains("<|start_header_id|>") && t.contains("\"parameters\"") {
            Self::Native(Convention::Llama3Json)
        } else {
            Self::Native(Convention::Hermes)
        }
    }

    pub fn convention(self) -> Convention {
        match self {
            Self::Native(c) => c,
            Self::Prompted => Convention::Hermes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, arguments: &str) -> FunctionCall {
        FunctionCall {
            id: "call_1".into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    #[test]
    fn calls_are_written_in_each_convention() {
        let calls = [call("f", r#"{"a":1,"b":[true]}"#), call("g", "not json")];
        assert_eq!(
            Convention::Hermes.calls_text(&calls),
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1, \"b\": [true]}}\n</tool_call>\n\
             <tool_call>\n{\"name\": \"g\", \"arguments\": not json}\n</tool_call>"
        );
        assert_eq!(
            Convention::Llama3Json.calls_text(&calls[..1]),
            r#"{"name": "f", "parameters": {"a": 1, "b": [true]}}"#
        );
    }

    #[test]
    fn the_template_decides_native_rendering_and_the_convention() {
        let smollm2 = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
        assert_eq!(TemplateTools::of(Some(smollm2)), TemplateTools::Prompted);
        assert_eq!(TemplateTools::of(None), TemplateTools::Prompted);
        let qwen = "{%- if tools %}<tools>{% for tool in tools %}{{ tool | tojson }}{% endfor %}</tools>{% endif %}{% for m in messages %}{% if m.tool_calls %}<tool_call>{% endif %}{% endfor %}";
        assert_eq!(
            TemplateTools::of(Some(qwen)),
            TemplateTools::Native(Convention::Hermes)
        );
        let llama = "{%- if tools is not none %}{% endif %}<|start_header_id|>{% if 'tool_calls' in message %}{{- '\"parameters\": ' }}{% endif %}";
        assert_eq!(
            TemplateTools::of(Some(llama)),
            TemplateTools::Native(Convention::Llama3Json)
        );
        assert_eq!(TemplateTools::Prompted.convention(), Convention::Hermes);
    }
}
