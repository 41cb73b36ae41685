//! The JSON field names a serde type reads, taken from the type itself: serde-derive hands its
//! list of (renamed) fields to `Deserializer::deserialize_struct`, and this deserializer only
//! records that list. Checks of accepted fields thus need no second, hand-kept list.

use std::fmt;

use serde::de::{self, DeserializeOwned, Visitor};

/// The field names `T` (a struct deriving `Deserialize`) reads; empty for any other type.
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut recorder = FieldRecorder { fields: &[] };
    // Recording always ends the deserialization with `Recorded`: there is nothing to read.
    let _ = T::deserialize(&mut recorder);
    recorder.fields
}

struct FieldRecorder {
    fields: &'static [&'static str],
}

/// Ends the deserialization once the field list is recorded (or when there is none).
#[derive(Debug)]
struct Recorded;

impl fmt::Display for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field names recorded")
    }
}

impl std::error::Error for Recorded {}

impl de::Error for Recorded {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Recorded
    }
}

impl<'de> de::Deserializer<'de> for &mut FieldRecorder {
    type Error = Recorded;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Recorded> {
        self.fields = fields;
        Err(Recorded)
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Recorded> {
        Err(Recorded)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;
    use axum::http::{header, HeaderMap};
    use serde::Deserialize;

    use super::*;
    use crate::http::body::parse_object;
    use crate::http::schema::*;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Probe {
        plain: u32,
        #[serde(rename = "type")]
        kind: Option<String>,
        #[serde(default)]
        flag: bool,
    }

    #[test]
    fn the_names_are_the_structs_fields_as_serde_reads_them() {
        assert_eq!(field_names::<Probe>(), ["plain", "type", "flag"]);
        assert_eq!(field_names::<DetokenizeRequest>(), ["model", "tokens"]);
        assert_eq!(
            field_names::<CommonParams>(),
            [
                "model",
                "max_tokens",
                "temperature",
                "top_p",
                "n",
                "stream",
                "stream_options",
                "stop",
                "seed",
                "presence_penalty",
                "frequency_penalty",
                "logit_bias",
                "user",
                "sharing_ratio",
                "top_k",
                "min_p",
                "repetition_penalty",
                "min_tokens",
                "ignore_eos",
                "stop_token_ids",
                "speculative",
            ]
        );
        assert_eq!(
            field_names::<CompletionRequest>(),
            ["prompt", "logprobs", "echo", "best_of", "suffix"]
        );
        assert_eq!(
            field_names::<ChatRequest>(),
            [
                "messages",
                "max_completion_tokens",
                "logprobs",
                "top_logprobs",
            ]
        );
        assert_eq!(
            field_names::<TokenizeRequest>(),
            ["model", "prompt", "messages", "add_generation_prompt"]
        );
        assert!(field_names::<u32>().is_empty());
        assert!(field_names::<Vec<Probe>>().is_empty());
    }

    #[test]
    fn a_field_of_the_struct_is_accepted_and_any_other_is_refused_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let parse = |body: &str| {
            parse_object(
                &headers,
                &Bytes::from(body.to_string()),
                &[field_names::<Probe>()],
            )
        };
        assert!(parse(r#"{"plain": 1, "type": "x", "flag": true}"#).is_ok());
        let e = parse(r#"{"plain": 1, "kind": "x"}"#).unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.param.as_deref(), Some("kind"));
        assert_eq!(e.code, Some("unsupported_field"));
        assert_eq!(e.message, "unsupported field `kind`");
    }
}
