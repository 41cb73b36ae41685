//! RoPE scaling in an HF `config.json`, as transformers reads it: a `rope_scaling` object whose
//! `rope_type` (or older `type`) is `default`, `linear` (`factor`) or `llama3` (`factor`,
//! `low_freq_factor`, `high_freq_factor`, `original_max_position_embeddings`). Transformers 5
//! writes the same object as `rope_parameters`, with `rope_theta` inside.

use serde_json::{json, Value};

use crate::error::{ModelError, Result};
use crate::rope_scaling::{Llama3Scaling, RopeScaling};

fn config_error(message: String) -> ModelError {
    ModelError::Config(message)
}

fn number(object: &Value, key: &str, name: &str) -> Result<f64> {
    object
        .get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| config_error(format!("{name} needs a number `{key}`")))
}

/// The scaling and base frequency (`rope_theta`, where the object carries one) of a
/// `rope_scaling` (`parameters`: false) or `rope_parameters` (true) object.
pub(super) fn read_hf_rope(value: &Value, parameters: bool) -> Result<(RopeScaling, Option<f64>)> {
    let name = if parameters {
        "rope_parameters"
    } else {
        "rope_scaling"
    };
    if value.is_null() {
        return Ok((RopeScaling::None, None));
    }
    let Some(object) = value.as_object() else {
        return Err(config_error(format!("{name} must be an object")));
    };
    if parameters && object.values().any(Value::is_object) {
        return Err(config_error(format!(
            "{name} per layer type is not supported"
        )));
    }
    let theta = object.get("rope_theta").and_then(Value::as_f64);
    let kind = match object.get("rope_type").or_else(|| object.get("type")) {
        Some(Value::String(s)) => s.as_str(),
        None if parameters => "default",
        _ => return Err(config_error(format!("{name} needs a string `rope_type`"))),
    };
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: number(value, "factor", name)?,
        },
        "llama3" => {
            let context = number(value, "original_max_position_embeddings", name)?;
            if !(context.fract() == 0.0 && context >= 1.0) {
                return Err(config_error(format!(
                    "{name}.original_max_position_embeddings {context} must be a positive integer"
                )));
            }
            RopeScaling::Llama3(Llama3Scaling {
                factor: number(value, "factor", name)?,
                low_freq_factor: number(value, "low_freq_factor", name)?,
                high_freq_factor: number(value, "high_freq_factor", name)?,
                original_max_position_embeddings: context as usize,
            })
        }
        other => return Err(ModelError::UnsupportedRopeScaling(other.to_string())),
    };
    Ok((scaling, theta))
}

/// The `rope_scaling` object transformers reads for `scaling` (`None`: no key). A frequency
/// table not of the Llama-3 form has no HF equivalent and is refused.
pub fn hf_rope_scaling(scaling: &RopeScaling) -> Result<Option<Value>> {
    Ok(match scaling {
        RopeScaling::None => None,
        RopeScaling::Linear { factor } => Some(json!({"rope_type": "linear", "factor": factor})),
        RopeScaling::Llama3(p) => Some(json!({
            "rope_type": "llama3",
            "factor": p.factor,
            "low_freq_factor": p.low_freq_factor,
            "high_freq_factor": p.high_freq_factor,
            "original_max_position_embeddings": p.original_max_position_embeddings,
        })),
        RopeScaling::Frequencies { .. } => {
            return Err(config_error(
                "the model's RoPE frequency factors (a GGUF rope_freqs table not of the Llama-3 \
                 form) cannot be written to an HF config.json; export it as GGUF instead"
                    .into(),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_type_reads_back_what_it_writes() {
        for scaling in [
            RopeScaling::Linear { factor: 2.5 },
            RopeScaling::Llama3(Llama3Scaling {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            }),
        ] {
            let written = hf_rope_scaling(&scaling).unwrap().unwrap();
            assert_eq!(read_hf_rope(&written, false).unwrap(), (scaling, None));
        }
        assert_eq!(hf_rope_scaling(&RopeScaling::None).unwrap(), None);
    }

    #[test]
    fn the_older_type_key_and_transformers_5_parameters_are_read() {
        let old = json!({"type": "linear", "factor": 2.0});
        assert_eq!(
            read_hf_rope(&old, false).unwrap().0,
            RopeScaling::Linear { factor: 2.0 }
        );
        let v5 = json!({"rope_theta": 500000.0, "rope_type": "default"});
        assert_eq!(
            read_hf_rope(&v5, true).unwrap(),
            (RopeScaling::None, Some(500000.0))
        );
        let bare = json!({"rope_theta": 10000.0});
        assert_eq!(read_hf_rope(&bare, true).unwrap().1, Some(10000.0));
    }

    #[test]
    fn malformed_objects_are_refused_with_the_key_named() {
        let cases = [
            (json!({"factor": 2.0}), false, "rope_type"),
            (json!({"rope_type": "linear"}), false, "factor"),
            (
                json!({"rope_type": "llama3", "factor": 8.0}),
                false,
                "original_max",
            ),
            (json!([1, 2]), false, "must be an object"),
            (
                json!({"full_attention": {"rope_theta": 1.0}}),
                true,
                "per layer",
            ),
        ];
        for (value, parameters, needle) in cases {
            let err = read_hf_rope(&value, parameters).unwrap_err().to_string();
            assert!(err.contains(needle), "{value}: {err}");
        }
        let err = read_hf_rope(&json!({"rope_type": "dynamic", "factor": 2.0}), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`dynamic` is not supported"), "{err}");
    }
}
