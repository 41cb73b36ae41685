//! Structured outputs on SmolLM2: a constrained greedy request gives exactly the unconstrained
//! output whenever that output already satisfies the constraint (the mask removes only tokens
//! the model did not want), in one batch with unconstrained requests at several sharing ratios;
//! a JSON Schema's output parses and keeps to the schema.

mod common;

use common::*;
use epas_server::engine::{EngineConfig, GenerationRequest, OutputConstraint, RequestConstraint};

const PROMPTS: &[&str] = &[
    "The capital of France is",
    "Q: What is 12 plus 30?\nA:",
    "List three colours: red,",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The answer, as a JSON object with a key \"city\": {\"city\": \"",
];

fn constrained(req: &GenerationRequest, output: OutputConstraint) -> GenerationRequest {
    GenerationRequest {
        constraint: Some(RequestConstraint {
            field: "structured_outputs",
            output,
        }),
        ..req.clone()
    }
}

/// `text` as a regular expression that matches only itself.
fn literal(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == ' ' {
                c.to_string()
            } else {
                format!("\\u{{{:x}}}", c as u32)
            }
        })
        .collect()
}

#[test]
fn constrained_greedy_output_equals_unconstrained_output_that_satisfies_it() {
    let model = smollm2().clone();
    let tokenizer = model.1.clone();
    let e = engine(&model, EngineConfig::default());
    let ratios = [0.0, 0.25, 0.5];
    let plain: Vec<GenerationRequest> = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut r = request(tokenizer.encode(p).unwrap(), 30, ratios[i % 3], 20);
            r.params.ignore_eos = false;
            r
        })
        .collect();
    let run = |reqs: &[GenerationRequest]| -> Vec<String> {
        let rxs: Vec<_> = reqs.iter().map(|r| submit(&e, r.clone())).collect();
        rxs.into_iter()
            .map(|rx| {
                let o = collect(rx, 1);
                assert_eq!(o.error, None);
                o.text[0].clone()
            })
            .collect()
    };
    let expected = run(&plain);
    // Each constraint admits the unconstrained text among other outputs; constrained and
    // unconstrained requests share the batch.
    let mut mixed = Vec::new();
    for (r, text) in plain.iter().zip(&expected) {
        mixed.push(constrained(
            r,
            OutputConstraint::Choice(vec![text.clone(), format!("{text} and more"), "no".into()]),
        ));
        mixed.push(constrained(
            r,
            OutputConstraint::Regex(format!("{}|[0-9]+", literal(text))),
        ));
        mixed.push(r.clone());
    }
    let got = run(&mixed);
    for (i, text) in expected.iter().enumerate() {
        assert_eq!(&got[3 * i], text, "choice, prompt {i}");
        assert_eq!(&got[3 * i + 1], text, "regex, prompt {i}");
        assert_eq!(
            &got[3 * i + 2],
            text,
            "unconstrained beside them, prompt {i}"
        );
    }
}

#[test]
fn json_schema_output_parses_and_keeps_to_the_schema() {
    let model = smollm2().clone();
    let tokenizer = model.1.clone();
    let e = engine(&model, EngineConfig::default());
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": false
    });
    let prompt = tokenizer.encode("A person, as JSON:").unwrap();
    let mut reqs = Vec::new();
    for (i, ratio) in [0.0, 0.25].into_iter().enumerate() {
        let mut r = constrained(
            &request(prompt.clone(), 30, ratio, 120),
            OutputConstraint::JsonSchema(schema.clone()),
        );
        r.params.ignore_eos = false;
        r.params.sampling.temperature = 0.8 * i as f32;
        r.params.sampling.seed = 7;
        reqs.push(r);
    }
    for r in reqs {
        let o = collect(submit(&e, r), 1);
        assert_eq!(o.error, None);
        let value: serde_json::Value =
            serde_json::from_str(&o.text[0]).unwrap_or_else(|err| panic!("{err}: {:?}", o.text[0]));
        let age = value["age"].as_i64().expect("an integer age");
        assert!((0..=120).contains(&age), "{value}");
        assert!(
            value["name"]
                .as_str()
                .is_some_and(|n| n.chars().count() <= 20),
            "{value}"
        );
        let tags = value["tags"].as_array().expect("tags");
        assert!(
            tags.len() <= 3 && tags.iter().all(|t| t == "a" || t == "b"),
            "{value}"
        );
        assert_eq!(value.as_object().unwrap().len(), 3, "{value}");
    }
}
