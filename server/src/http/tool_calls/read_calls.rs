//! Reads the calls out of the JSON a model wrote for them: one object in a Hermes
//! `<tool_call>` tag, or `;`-separated objects as a Llama 3 answer. Anything else is not a
//! call, and the caller keeps the text as content.

use serde_json::{Deserializer, Value};

use super::convention::Convention;

/// A call read out of text: the function's name and its arguments as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReadCall {
    pub name: String,
    pub arguments: String,
}

/// The calls `body` holds, if every part of it is a call of one of `names`.
pub(super) fn read_calls(
    body: &str,
    convention: Convention,
    names: &[String],
) -> Option<Vec<ReadCall>> {
    let objects = json_values(body)?;
    if convention == Convention::Hermes && objects.len() != 1 {
        return None;
    }
    objects.into_iter().map(|v| read_call(v, names)).collect()
}

/// JSON values separated by `;` (and whitespace), with nothing else around them.
fn json_values(text: &str) -> Option<Vec<Value>> {
    let mut rest = text.trim();
    let mut values = Vec::new();
    loop {
        let mut stream = Deserializer::from_str(rest).into_iter::<Value>();
        values.push(stream.next()?.ok()?);
        rest = rest[stream.byte_offset()..].trim_start();
        if rest.is_empty() {
            return Some(values);
        }
        rest = rest.strip_prefix(';')?.trim_start();
    }
}

/// `{"name": ..., "arguments": {...}}` (or `"parameters"`, Llama's key; the arguments may be a
/// string holding the object, and may be left out when there are none).
fn read_call(value: Value, names: &[String]) -> Option<ReadCall> {
    let Value::Object(mut call) = value else {
        return None;
    };
    let name = match call.remove("name")? {
        Value::String(name) if names.contains(&name) => name,
        _ => return None,
    };
    let arguments = match (call.remove("arguments"), call.remove("parameters")) {
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => Value::Object(Default::default()),
        (Some(_), Some(_)) => return None,
    };
    if !call.is_empty() {
        return None;
    }
    let arguments = match arguments {
        Value::String(text) => serde_json::from_str::<Value>(&text).ok()?,
        other => other,
    };
    arguments.is_object().then(|| ReadCall {
        name,
        arguments: arguments.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["f".into(), "g".into()]
    }

    fn read(body: &str, convention: Convention) -> Option<Vec<(String, String)>> {
        read_calls(body, convention, &names())
            .map(|calls| calls.into_iter().map(|c| (c.name, c.arguments)).collect())
    }

    fn call(name: &str, arguments: &str) -> (String, String) {
        (name.into(), arguments.into())
    }

    #[test]
    fn well_formed_calls_are_read() {
        use Convention::*;
        assert_eq!(
            read(
                "\n{\"name\": \"f\", \"arguments\": {\"b\": 1, \"a\": [2]}}\n",
                Hermes
            ),
            Some(vec![call("f", r#"{"b":1,"a":[2]}"#)])
        );
        assert_eq!(
            read(r#"{"arguments": "{\"x\": true}", "name": "g"}"#, Hermes),
            Some(vec![call("g", r#"{"x":true}"#)])
        );
        assert_eq!(
            read(r#"{"name": "g"}"#, Hermes),
            Some(vec![call("g", "{}")])
        );
        assert_eq!(
            read(
                r#"{"name": "f", "parameters": {"q": "a;b"}}; {"name": "g", "parameters": {}}"#,
                Llama3Json
            ),
            Some(vec![call("f", r#"{"q":"a;b"}"#), call("g", "{}")])
        );
    }

    #[test]
    fn anything_else_is_not_a_call() {
        use Convention::*;
        for body in [
            "",
            "{\"name\": \"f\", \"arguments\": {}",
            "{\"name\": \"h\", \"arguments\": {}}",
            "{\"name\": 3, \"arguments\": {}}",
            "{\"arguments\": {}}",
            "{\"name\": \"f\", \"arguments\": [1]}",
            "{\"name\": \"f\", \"arguments\": \"not json\"}",
            "{\"name\": \"f\", \"arguments\": {}, \"parameters\": {}}",
            "{\"name\": \"f\", \"arguments\": {}, \"id\": 1}",
            "{\"name\": \"f\"} trailing",
            "[{\"name\": \"f\"}]",
            "{\"name\": \"f\"}; {\"name\": \"g\"}",
        ] {
            assert_eq!(read(body, Hermes), None, "{body:?}");
        }
        assert_eq!(read("{\"name\": \"f\"};", Llama3Json), None);
        assert_eq!(
            read("{\"name\": \"f\"} {\"name\": \"g\"}", Llama3Json),
            None
        );
    }
}
