//! Jinja chat templates (minijinja) with what templates written for Hugging Face's
//! `apply_chat_template` call: Python's string methods, `raise_exception`, and `tojson` as
//! Hugging Face defines it (Python's `json.dumps`: `", "` separators, no HTML escaping), so that
//! tool definitions and arguments read as the model saw them in training.

use minijinja::value::Kwargs;
use minijinja::{Environment, Error, ErrorKind, Value};

use crate::error::{ModelError, Result};
use crate::python_json;

/// `template` rendered with `context` (the template's variables).
pub(crate) fn render(
    template: &str,
    context: &serde_json::Map<String, serde_json::Value>,
) -> Result<String> {
    let mut env = Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        },
    );
    env.add_filter("tojson", tojson);
    env.add_template("chat", template)
        .map_err(|e| ModelError::ChatTemplate(e.to_string()))?;
    env.get_template("chat")
        .and_then(|t| t.render(Value::from_serialize(context)))
        .map_err(|e| ModelError::ChatTemplate(e.to_string()))
}

/// `value | tojson`, `tojson(indent=4)`, `tojson(ensure_ascii=True)`: Hugging Face's filter,
/// which is `json.dumps` with `ensure_ascii` off unless asked.
fn tojson(
    value: &Value,
    indent: Option<usize>,
    kwargs: Kwargs,
) -> std::result::Result<String, Error> {
    let indent = match indent {
        Some(n) => Some(n),
        None => kwargs.get::<Option<usize>>("indent")?,
    };
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    python_json::to_string(value, indent, ensure_ascii).map_err(|e| {
        Error::new(ErrorKind::InvalidOperation, "cannot serialize to JSON").with_source(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rendered(template: &str, context: serde_json::Value) -> Result<String> {
        render(template, context.as_object().unwrap())
    }

    #[test]
    fn tojson_writes_as_python_in_the_callers_order() {
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"z": {}, "a": {"description": "<b> & 'c'"}}}}}]);
        let out = rendered(
            "{% for t in tools %}{{ t | tojson }}{% endfor %}",
            json!({"tools": tools}),
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"z": {}, "a": {"description": "<b> & 'c'"}}}}}"#
        );
        let out = rendered(
            "{{ x | tojson(indent=2) }}|{{ x | tojson(ensure_ascii=true) }}",
            json!({"x": {"k": "é"}}),
        )
        .unwrap();
        assert_eq!(out, "{\n  \"k\": \"é\"\n}|{\"k\": \"\\u00e9\"}");
        let e = rendered("{{ x | tojson(sort_keys=true) }}", json!({"x": 1})).unwrap_err();
        assert!(e.to_string().contains("sort_keys"), "{e}");
    }

    #[test]
    fn undefined_tools_and_raise_exception_behave_as_in_hugging_face() {
        let template = "{% if tools is defined %}tools{% else %}none{% endif %}{% if messages|length > 1 %}{{ raise_exception('one only') }}{% endif %}";
        assert_eq!(
            rendered(template, json!({"messages": [1]})).unwrap(),
            "none"
        );
        assert_eq!(
            rendered(template, json!({"messages": [1], "tools": []})).unwrap(),
            "tools"
        );
        let e = rendered(template, json!({"messages": [1, 2]})).unwrap_err();
        assert!(e.to_string().contains("one only"), "{e}");
    }
}
