//! Turns a conversation and the tools it offers into the prompt text. A template that renders
//! tools gets them, the assistant's `tool_calls` and the `tool` turns as Hugging Face's
//! `apply_chat_template` passes them (arguments as JSON objects); any other template gets text
//! turns in the Hermes convention: a system block listing the tools, calls written into the
//! assistant's turn, and tool results in `<tool_response>` tags in a user turn (one turn for
//! consecutive results, so templates that want user and assistant turns to alternate accept it).

use epas_model::{python_json_string, TextTokenizer};
use serde_json::{json, Map, Value};

use super::super::conversation::Turn;
use super::super::error::ApiError;
use super::convention::{Convention, TemplateTools};
use super::tools::FunctionTool;

/// The prompt of `turns` with `tools` shown to the model.
pub(crate) fn render_prompt(
    tokenizer: &TextTokenizer,
    turns: &[Turn],
    tools: Option<&[FunctionTool]>,
    add_generation_prompt: bool,
) -> Result<String, ApiError> {
    let (messages, tools) = match TemplateTools::of(tokenizer.chat_template.as_deref()) {
        TemplateTools::Native(_) => (
            Value::Array(turns.iter().map(template_message).collect()),
            tools.map(|t| Value::Array(t.iter().map(FunctionTool::template_json).collect())),
        ),
        TemplateTools::Prompted => (Value::Array(prompted_messages(turns, tools)), None),
    };
    tokenizer
        .render_chat_template(&messages, tools.as_ref(), add_generation_prompt)
        .map_err(|e| ApiError::invalid("messages", e.to_string()))
}

/// A turn as templates that render tools read it.
fn template_message(turn: &Turn) -> Value {
    let mut m = Map::new();
    m.insert("role".into(), json!(turn.role));
    m.insert("content".into(), json!(turn.content));
    if !turn.tool_calls.is_empty() {
        let calls = turn.tool_calls.iter().map(|c| {
            let arguments =
                serde_json::from_str::<Value>(&c.arguments).unwrap_or_else(|_| json!(c.arguments));
            json!({"id": c.id, "type": "function",
                   "function": {"name": c.name, "arguments": arguments}})
        });
        m.insert("tool_calls".into(), Value::Array(calls.collect()));
    }
    if let Some(id) = &turn.tool_call_id {
        m.insert("tool_call_id".into(), json!(id));
    }
    Value::Object(m)
}

/// Text turns in the Hermes convention, for a template that knows nothing of tools.
fn prompted_messages(turns: &[Turn], tools: Option<&[FunctionTool]>) -> Vec<Value> {
    let mut messages: Vec<Value> = Vec::with_capacity(turns.len() + 1);
    let mut results_open = false;
    for turn in turns {
        if turn.tool_call_id.is_some() {
            let result = format!("<tool_response>\n{}\n</tool_response>", turn.content);
            match messages.last_mut() {
                Some(Value::Object(last)) if results_open => {
                    let text = last["content"].as_str().unwrap_or_default();
                    last["content"] = json!(format!("{text}\n{result}"));
                }
                _ => messages.push(json!({"role": "user", "content": result})),
            }
            results_open = true;
            continue;
        }
        results_open = false;
        let mut content = turn.content.clone();
        if !turn.tool_calls.is_empty() {
            if !content.is_empty() {
                content.push('\n');
            }
            content.push_str(&Convention::Hermes.calls_text(&turn.tool_calls));
        }
        messages.push(json!({"role": turn.role, "content": content}));
    }
    if let Some(tools) = tools {
        let block = tools_block(tools);
        match messages.first_mut() {
            Some(Value::Object(first)) if first["role"] == "system" => {
                let text = first["content"].as_str().unwrap_or_default();
                first["content"] = json!(format!("{text}\n\n{block}"));
            }
            _ => messages.insert(0, json!({"role": "system", "content": block})),
        }
    }
    messages
}

/// The system prompt's part that offers `tools` in the Hermes convention.
fn tools_block(tools: &[FunctionTool]) -> String {
    let listed: Vec<String> = tools
        .iter()
        .map(|t| python_json_string(&t.template_json(), None, false).expect("JSON serialises"))
        .collect();
    format!(
        "# Tools\n\n\
         You may call functions to help with the request. The functions you can call are \
         described as JSON between <tools> and </tools>:\n\
         <tools>\n{}\n</tools>\n\n\
         To call a function, write a JSON object with its name and arguments between \
         <tool_call> and </tool_call>, one call per tag pair:\n\
         <tool_call>\n{{\"name\": <function name>, \"arguments\": <arguments as a JSON object>}}\n</tool_call>",
        listed.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::tool_calls::FunctionCall;

    /// The built-in model's tokenizer with `template`.
    fn tokenizer(template: &str) -> TextTokenizer {
        let (_, mut t) = epas_builtin::load_builtin(&candle_core::Device::Cpu).unwrap();
        t.chat_template = Some(template.into());
        t
    }

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn weather() -> FunctionTool {
        FunctionTool {
            name: "get_weather".into(),
            description: Some("The weather now".into()),
            parameters: Some(json!({"type": "object", "properties": {"city": {"type": "string"}}})),
            strict: None,
        }
    }

    fn conversation() -> Vec<Turn> {
        let call = |id: &str, city: &str| FunctionCall {
            id: id.into(),
            name: "get_weather".into(),
            arguments: format!("{{\"city\":\"{city}\"}}"),
        };
        let result = |id: &str, text: &str| Turn {
            tool_call_id: Some(id.into()),
            ..Turn::text("tool", text)
        };
        vec![
            Turn::text("user", "Weather in Paris and Oslo?"),
            Turn {
                tool_calls: vec![call("c1", "Paris"), call("c2", "Oslo")],
                ..Turn::text("assistant", "")
            },
            result("c1", "sunny"),
            result("c2", "snow"),
        ]
    }

    #[test]
    fn a_template_without_tools_gets_the_hermes_convention_in_text_turns() {
        let t = tokenizer(CHATML);
        let text = render_prompt(&t, &conversation(), Some(&[weather()]), true).unwrap();
        let expected = "<|im_start|>system\n# Tools\n\nYou may call functions to help with the request. \
            The functions you can call are described as JSON between <tools> and </tools>:\n<tools>\n\
            {\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"The weather now\", \
            \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}}}}\n</tools>\n\n\
            To call a function, write a JSON object with its name and arguments between <tool_call> and \
            </tool_call>, one call per tag pair:\n<tool_call>\n{\"name\": <function name>, \"arguments\": \
            <arguments as a JSON object>}\n</tool_call><|im_end|>\n\
            <|im_start|>user\nWeather in Paris and Oslo?<|im_end|>\n\
            <|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n\
            <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call><|im_end|>\n\
            <|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n<tool_response>\nsnow\n</tool_response><|im_end|>\n\
            <|im_start|>assistant\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn the_tools_block_joins_a_system_turn_and_no_tools_leave_text_turns_unchanged() {
        let t = tokenizer(CHATML);
        let turns = [Turn::text("system", "Be brief."), Turn::text("user", "Hi")];
        let text = render_prompt(&t, &turns, Some(&[weather()]), false).unwrap();
        assert!(
            text.starts_with("<|im_start|>system\nBe brief.\n\n# Tools\n"),
            "{text}"
        );
        assert_eq!(text.matches("<|im_start|>system").count(), 1);
        let plain = render_prompt(&t, &turns, None, true).unwrap();
        let messages = [
            epas_model::ChatMessage {
                role: "system".into(),
                content: "Be brief.".into(),
            },
            epas_model::ChatMessage {
                role: "user".into(),
                content: "Hi".into(),
            },
        ];
        assert_eq!(plain, t.apply_chat_template(&messages, true).unwrap());
    }

    #[test]
    fn a_template_with_tools_gets_them_with_calls_and_results_as_hugging_face_passes_them() {
        let template = "{% for t in tools %}[{{ t.function.name }}: {{ t.function.parameters | tojson }}]{% endfor %}\
            {% for m in messages %}<{{ m.role }}>{% if m.tool_calls %}{% for c in m.tool_calls %}\
            ({{ c.id }} {{ c.function.name }} {{ c.function.arguments.city }} {{ c.function.arguments | tojson }}){% endfor %}\
            {% elif m.role == 'tool' %}{{ m.tool_call_id }}={{ m.content }}{% else %}{{ m.content }}{% endif %}{% endfor %}";
        let t = tokenizer(template);
        let text = render_prompt(&t, &conversation(), Some(&[weather()]), true).unwrap();
        assert_eq!(
            text,
            "[get_weather: {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}}]\
             <user>Weather in Paris and Oslo?\
             <assistant>(c1 get_weather Paris {\"city\": \"Paris\"})(c2 get_weather Oslo {\"city\": \"Oslo\"})\
             <tool>c1=sunny<tool>c2=snow"
        );
        let undefined = "{% if tools is defined %}tools{% endif %}{% for m in messages %}{% if m.tool_calls is defined %}calls{% endif %}{{ m.content }}{% endfor %}";
        let text = render_prompt(
            &tokenizer(undefined),
            &[Turn::text("user", "Hi")],
            None,
            true,
        )
        .unwrap();
        assert_eq!(text, "Hi");
    }
}
