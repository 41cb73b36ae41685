//! The request fields that constrain the output (structured outputs): OpenAI's
//! `response_format`, vLLM's `structured_outputs` object and its older `guided_*` names. At most
//! one constraint per request; whether it compiles is checked in the engine's validation step.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::engine::{OutputConstraint, RequestConstraint};

/// The constraint fields of a chat or completion body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StructuredParams {
    pub response_format: Option<Value>,
    pub structured_outputs: Option<Value>,
    pub guided_json: Option<Value>,
    pub guided_regex: Option<Value>,
    pub guided_choice: Option<Value>,
    pub guided_grammar: Option<Value>,
}

impl StructuredParams {
    /// The request's output constraint, if it has one.
    pub fn constraint(&self) -> Result<Option<RequestConstraint>, ApiError> {
        let mut found: Vec<RequestConstraint> = Vec::new();
        if let Some(format) = &self.response_format {
            found.extend(response_format(format)?);
        }
        if let Some(outputs) = &self.structured_outputs {
            found.extend(structured_outputs(outputs)?);
        }
        let guided: [(&'static str, &Option<Value>, Kind); 4] = [
            ("guided_json", &self.guided_json, Kind::Json),
            ("guided_regex", &self.guided_regex, Kind::Regex),
            ("guided_choice", &self.guided_choice, Kind::Choice),
            ("guided_grammar", &self.guided_grammar, Kind::Grammar),
        ];
        for (field, value, kind) in guided {
            if let Some(value) = value.as_ref().filter(|v| !v.is_null()) {
                found.push(constraint(field, value, kind)?);
            }
        }
        match found.len() {
            0 | 1 => Ok(found.pop()),
            _ => Err(ApiError::invalid(
                found[1].field,
                format!(
                    "a request takes one output constraint; {} and {} are both set",
                    found[0].field, found[1].field
                ),
            )),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Json,
    Regex,
    Choice,
    Grammar,
}

pub(super) fn object<'a>(
    field: &str,
    value: &'a Value,
) -> Result<&'a Map<String, Value>, ApiError> {
    value
        .as_object()
        .ok_or_else(|| ApiError::invalid(field, format!("{field} must be an object")))
}

pub(super) fn refuse_unknown_keys(
    field: &str,
    map: &Map<String, Value>,
    known: &[&str],
) -> Result<(), ApiError> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(ApiError::unsupported_field(
            format!("{field}.{key}"),
            format!(
                "unsupported field `{key}` in {field} (accepted: {})",
                known.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// OpenAI's `response_format`: `text`, `json_object` or `json_schema`.
fn response_format(value: &Value) -> Result<Option<RequestConstraint>, ApiError> {
    const FIELD: &str = "response_format";
    let map = object(FIELD, value)?;
    let kind = map.get("type").and_then(Value::as_str).unwrap_or_default();
    let done = |output| {
        Ok(Some(RequestConstraint {
            field: FIELD,
            output,
        }))
    };
    match kind {
        "text" => {
            refuse_unknown_keys(FIELD, map, &["type"])?;
            Ok(None)
        }
        "json_object" => {
            refuse_unknown_keys(FIELD, map, &["type"])?;
            done(OutputConstraint::JsonObject)
        }
        "json_schema" => {
            refuse_unknown_keys(FIELD, map, &["type", "json_schema"])?;
            let inner_field = "response_format.json_schema";
            let inner = object(inner_field, map.get("json_schema").unwrap_or(&Value::Null))?;
            done(json_schema_output(inner_field, inner, &[])?)
        }
        other => Err(ApiError::invalid(
            "response_format.type",
            format!(
                "response_format type {other:?} is not supported (text, json_object, json_schema)"
            ),
        )),
    }
}

/// The constraint of a `json_schema` format object at `at`: its `name`, `schema`, `strict`
/// and `description`, and the keys in `also` (the Responses API puts `type` beside them).
pub(super) fn json_schema_output(
    at: &str,
    map: &Map<String, Value>,
    also: &[&str],
) -> Result<OutputConstraint, ApiError> {
    let known: Vec<&str> = ["name", "schema", "strict", "description"]
        .into_iter()
        .chain(also.iter().copied())
        .collect();
    refuse_unknown_keys(at, map, &known)?;
    if let Some(name) = map.get("name") {
        let valid = name.as_str().is_some_and(|n| {
            !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        if !valid {
            return Err(ApiError::invalid(
                format!("{at}.name"),
                "the name must be 1 to 64 characters of a-z, A-Z, 0-9, _ and -",
            ));
        }
    }
    match map.get("schema") {
        Some(schema @ (Value::Object(_) | Value::Bool(_))) => {
            Ok(OutputConstraint::JsonSchema(schema.clone()))
        }
        Some(_) => Err(ApiError::invalid(
            format!("{at}.schema"),
            "the schema must be a JSON Schema object",
        )),
        None => Err(ApiError::invalid(
            format!("{at}.schema"),
            format!("a json_schema format needs {at}.schema"),
        )),
    }
}

/// vLLM's `structured_outputs`: one of `json`, `regex`, `choice`, `grammar`, `json_object`.
fn structured_outputs(value: &Value) -> Result<Option<RequestConstraint>, ApiError> {
    const FIELD: &str = "structured_outputs";
    let map = object(FIELD, value)?;
    let keys: [(&'static str, Option<Kind>); 5] = [
        ("structured_outputs.json", Some(Kind::Json)),
        ("structured_outputs.regex", Some(Kind::Regex)),
        ("structured_outputs.choice", Some(Kind::Choice)),
        ("structured_outputs.grammar", Some(Kind::Grammar)),
        ("structured_outputs.json_object", None),
    ];
    let names: Vec<&str> = keys.iter().map(|(f, _)| &f[FIELD.len() + 1..]).collect();
    refuse_unknown_keys(FIELD, map, &names)?;
    let mut found = Vec::new();
    for ((field, kind), name) in keys.into_iter().zip(names) {
        let Some(value) = map.get(name).filter(|v| !v.is_null()) else {
            continue;
        };
        match kind {
            Some(kind) => found.push(constraint(field, value, kind)?),
            None => match value {
                Value::Bool(true) => found.push(RequestConstraint {
                    field,
                    output: OutputConstraint::JsonObject,
                }),
                Value::Bool(false) => {}
                _ => return Err(ApiError::invalid(field, "json_object must be a boolean")),
            },
        }
    }
    if found.len() > 1 {
        return Err(ApiError::invalid(
            FIELD,
            format!(
                "structured_outputs takes one of json, regex, choice, grammar, json_object; {} and {} are both set",
                found[0].field, found[1].field
            ),
        ));
    }
    Ok(found.pop())
}

/// One constraint from its value: a JSON Schema (an object, or a string holding one), a regular
/// expression, a list of choices or a Lark grammar.
fn constraint(
    field: &'static str,
    value: &Value,
    kind: Kind,
) -> Result<RequestConstraint, ApiError> {
    let text = |what: &str| {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::invalid(field, format!("{field} must be {what}")))
    };
    let output = match kind {
        Kind::Json => OutputConstraint::JsonSchema(match value {
            Value::String(s) => serde_json::from_str(s).map_err(|e| {
                ApiError::invalid(field, format!("{field} is not a JSON Schema: {e}"))
            })?,
            Value::Object(_) | Value::Bool(_) => value.clone(),
            _ => {
                return Err(ApiError::invalid(
                    field,
                    format!("{field} must be a JSON Schema object"),
                ))
            }
        }),
        Kind::Regex => OutputConstraint::Regex(text("a regular expression string")?),
        Kind::Grammar => OutputConstraint::Lark(text("a Lark grammar string")?),
        Kind::Choice => {
            let options: Option<Vec<String>> = value.as_array().and_then(|a| {
                a.iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
            });
            match options {
                Some(options) if !options.is_empty() => OutputConstraint::Choice(options),
                _ => {
                    return Err(ApiError::invalid(
                        field,
                        format!("{field} must be a non-empty list of strings"),
                    ))
                }
            }
        }
    };
    Ok(RequestConstraint { field, output })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<Option<RequestConstraint>, ApiError> {
        serde_json::from_value::<StructuredParams>(body)
            .unwrap()
            .constraint()
    }

    fn output(body: Value) -> OutputConstraint {
        parse(body).unwrap().expect("a constraint").output
    }

    fn refused_field(body: Value) -> String {
        parse(body).unwrap_err().param.expect("a field")
    }

    #[test]
    fn each_spelling_gives_its_constraint() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert_eq!(
            output(json!({"response_format": {"type": "json_object"}})),
            OutputConstraint::JsonObject
        );
        assert_eq!(
            output(json!({"response_format": {"type": "json_schema",
                "json_schema": {"name": "a_b-1", "schema": schema, "strict": true}}})),
            OutputConstraint::JsonSchema(schema.clone())
        );
        assert!(parse(json!({"response_format": {"type": "text"}}))
            .unwrap()
            .is_none());
        assert_eq!(
            output(json!({"structured_outputs": {"json": schema}})),
            OutputConstraint::JsonSchema(schema.clone())
        );
        assert_eq!(
            output(json!({"guided_json": schema.to_string()})),
            OutputConstraint::JsonSchema(schema)
        );
        assert_eq!(
            output(json!({"structured_outputs": {"regex": "a+"}})),
            OutputConstraint::Regex("a+".into())
        );
        assert_eq!(
            output(json!({"guided_regex": "a+"})),
            OutputConstraint::Regex("a+".into())
        );
        assert_eq!(
            output(json!({"guided_choice": ["x", "y"]})),
            OutputConstraint::Choice(vec!["x".into(), "y".into()])
        );
        assert_eq!(
            output(json!({"structured_outputs": {"grammar": "start: \"a\""}})),
            OutputConstraint::Lark("start: \"a\"".into())
        );
        assert_eq!(
            output(json!({"structured_outputs": {"json_object": true}})),
            OutputConstraint::JsonObject
        );
        assert!(parse(json!({})).unwrap().is_none());
    }

    #[test]
    fn malformed_or_conflicting_constraints_name_their_field() {
        assert_eq!(
            refused_field(json!({"guided_regex": "a", "response_format": {"type": "json_object"}})),
            "guided_regex"
        );
        assert_eq!(
            refused_field(json!({"structured_outputs": {"regex": "a", "choice": ["b"]}})),
            "structured_outputs"
        );
        assert_eq!(
            refused_field(json!({"structured_outputs": {"xml": "a"}})),
            "structured_outputs.xml"
        );
        assert_eq!(
            refused_field(json!({"response_format": {"type": "yaml"}})),
            "response_format.type"
        );
        assert_eq!(
            refused_field(
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}})
            ),
            "response_format.json_schema.schema"
        );
        assert_eq!(
            refused_field(json!({"response_format": {"type": "json_schema",
                "json_schema": {"name": "has space", "schema": {}}}})),
            "response_format.json_schema.name"
        );
        assert_eq!(refused_field(json!({"guided_choice": []})), "guided_choice");
        assert_eq!(
            refused_field(json!({"guided_choice": [1]})),
            "guided_choice"
        );
        assert_eq!(
            refused_field(json!({"guided_json": "{not json"})),
            "guided_json"
        );
        assert_eq!(refused_field(json!({"guided_regex": 5})), "guided_regex");
    }

    #[test]
    fn unknown_keys_inside_a_constraint_are_unsupported_fields() {
        for (body, param) in [
            (
                json!({"structured_outputs": {"xml": "a"}}),
                "structured_outputs.xml",
            ),
            (
                json!({"response_format": {"type": "json_object", "schema": {}}}),
                "response_format.schema",
            ),
            (
                json!({"response_format": {"type": "json_schema",
                    "json_schema": {"name": "x", "schema": {}, "extra": 1}}}),
                "response_format.json_schema.extra",
            ),
        ] {
            let e = parse(body.clone()).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
            assert_eq!(e.code, Some("unsupported_field"), "{body}");
        }
    }
}
