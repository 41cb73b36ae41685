//! The `text` field: `format` `{"type": "text"}` (free text), `{"type": "json_object"}` or
//! `{"type": "json_schema", "name", "schema", "strict", "description"}`, the same constraints
//! as chat's `response_format`.

use serde_json::Value;

use super::super::error::ApiError;
use super::super::structured_params::{json_schema_output, object, refuse_unknown_keys};
use crate::engine::{OutputConstraint, RequestConstraint};

const FIELD: &str = "text.format";

/// The output constraint `text` asks for, if any.
pub fn text_constraint(text: Option<&Value>) -> Result<Option<RequestConstraint>, ApiError> {
    let Some(text) = text.filter(|t| !t.is_null()) else {
        return Ok(None);
    };
    let map = object("text", text)?;
    refuse_unknown_keys("text", map, &["format"])?;
    let Some(format) = map.get("format").filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    let format = object(FIELD, format)?;
    let output = match format
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
    {
        "text" => {
            refuse_unknown_keys(FIELD, format, &["type"])?;
            return Ok(None);
        }
        "json_object" => {
            refuse_unknown_keys(FIELD, format, &["type"])?;
            OutputConstraint::JsonObject
        }
        "json_schema" => json_schema_output(FIELD, format, &["type"])?,
        other => {
            return Err(ApiError::invalid(
                "text.format.type",
                format!("format type {other:?} is not supported (text, json_object, json_schema)"),
            ))
        }
    };
    Ok(Some(RequestConstraint {
        field: FIELD,
        output,
    }))
}
