//! Structured outputs on the scheduler: a constrained choice only ever samples what its
//! constraint allows and ends when the constraint is complete, beside unconstrained rows that
//! are unchanged; each choice of `n` walks the constraint on its own; constrained rows never
//! draft.

use super::*;
use crate::engine::{OutputConstraint, RequestConstraint, SpeculativeConfig};

fn constrained(req: GenerationRequest, output: OutputConstraint) -> GenerationRequest {
    GenerationRequest {
        constraint: Some(RequestConstraint {
            field: "structured_outputs",
            output,
        }),
        ..req
    }
}

fn text(tokens: &[u32]) -> String {
    tokenizer().decode(tokens, false).unwrap()
}

#[test]
fn constrained_choices_follow_their_constraint_beside_unconstrained_rows() {
    let mut h = Harness::new(config(8, 64), 2000);
    let plain_prompt = prompt(12, 1);
    let plain = h.submit(request(plain_prompt.clone(), 0.0, 24, 1)).unwrap();
    let regex = h
        .submit(constrained(
            request(prompt(10, 2), 0.5, 40, 2),
            OutputConstraint::Regex("[0-9]{3}-[a-z]{2}".into()),
        ))
        .unwrap();
    let options = vec!["alpha beta".to_string(), "gamma".to_string()];
    let choice = h
        .submit(constrained(
            request(prompt(9, 3), 0.25, 40, 1),
            OutputConstraint::Choice(options.clone()),
        ))
        .unwrap();
    let schema = serde_json::json!({"enum": ["red", "green", 3]});
    let json = h
        .submit(constrained(
            request(prompt(8, 4), 0.75, 40, 1),
            OutputConstraint::JsonSchema(schema),
        ))
        .unwrap();
    h.run_until_idle(400);

    let o = h.outcome(plain, 1);
    assert_eq!(
        o.tokens,
        h.expected(&plain_prompt, 24, 1),
        "unconstrained row changed"
    );
    let o = h.outcome(regex, 2);
    assert_eq!(o.error, None);
    let matches = |s: &str| {
        let b = s.as_bytes();
        b.len() == 6
            && b[..3].iter().all(u8::is_ascii_digit)
            && b[3] == b'-'
            && b[4..].iter().all(u8::is_ascii_lowercase)
    };
    for (tokens, finish) in o.tokens.iter().zip(&o.finish) {
        assert!(matches(&text(tokens)), "{:?}", text(tokens));
        assert_eq!(*finish, Some(FinishReason::Stop));
    }
    let o = h.outcome(choice, 1);
    assert!(
        options.contains(&text(&o.tokens[0])),
        "{:?}",
        text(&o.tokens[0])
    );
    assert_eq!(o.finish, vec![Some(FinishReason::Stop)]);
    let o = h.outcome(json, 1);
    let value: serde_json::Value = serde_json::from_str(text(&o.tokens[0]).trim()).unwrap();
    assert!(["red", "green", "3"]
        .iter()
        .any(|v| value.to_string().trim_matches('"') == *v));
}

#[test]
fn the_choices_of_one_request_each_walk_the_constraint() {
    // The fake model prefers the same token for every choice; a shared matcher would be
    // advanced twice per step and refuse the second choice's token.
    let mut h = Harness::new(config(8, 64), 2000);
    let id = h
        .submit(constrained(
            request(prompt(6, 5), 0.0, 20, 3),
            OutputConstraint::Regex("(ab|cd)[0-9]{4}".into()),
        ))
        .unwrap();
    h.run_until_idle(200);
    let o = h.outcome(id, 3);
    assert_eq!(o.error, None);
    assert_eq!(o.finish, vec![Some(FinishReason::Stop); 3]);
    assert!(o.tokens.iter().all(|t| t == &o.tokens[0]));
}

#[test]
fn constrained_rows_never_draft() {
    let cfg = EngineConfig {
        speculative: Some(SpeculativeConfig {
            num_tokens: 4,
            ngram_min: 1,
            ngram_max: 3,
            max_batch: 8,
        }),
        ..config(8, 64)
    };
    // The repetitive model makes every unconstrained row draft.
    let mut h = Harness::with_model(cfg, 2000, true);
    let id = h
        .submit(constrained(
            request(prompt(12, 6), 0.0, 30, 1),
            OutputConstraint::Regex("[a-c]{30}".into()),
        ))
        .unwrap();
    h.run_until_idle(200);
    assert_eq!(h.outcome(id, 1).error, None);
    assert_eq!(h.scheduler.counts().drafted, 0);
    let plain = h.submit(request(prompt(12, 6), 0.0, 30, 1)).unwrap();
    h.run_until_idle(200);
    assert_eq!(h.outcome(plain, 1).error, None);
    assert!(
        h.scheduler.counts().drafted > 0,
        "the unconstrained row drafts"
    );
}

#[test]
fn a_complete_constraint_ends_its_choice_even_before_min_tokens() {
    let mut h = Harness::new(config(8, 64), 2000);
    let mut req = constrained(
        request(prompt(6, 7), 0.0, 20, 1),
        OutputConstraint::Choice(vec!["ab".into()]),
    );
    // The choice allows nothing after "ab"; ten tokens are asked for.
    req.params.min_tokens = 10;
    let id = h.submit(req).unwrap();
    h.run_until_idle(200);
    let o = h.outcome(id, 1);
    assert_eq!(o.error, None);
    assert_eq!(text(&o.tokens[0]), "ab");
    assert_eq!(o.finish, vec![Some(FinishReason::Stop)]);
}

#[test]
fn a_constraint_that_does_not_compile_names_its_field() {
    let h = Harness::new(config(8, 64), 2000);
    let err = h
        .validator
        .validate(constrained(
            request(prompt(6, 9), 0.0, 20, 1),
            OutputConstraint::Regex("(unclosed".into()),
        ))
        .unwrap_err();
    let Refusal::Invalid(err) = err else {
        panic!("a regex that does not compile is the request's fault: {err:?}")
    };
    assert_eq!(err.param, "structured_outputs");
    assert!(err.message.contains("regex"), "{}", err.message);
    let err = h
        .validator
        .validate(constrained(
            request(prompt(6, 9), 0.0, 20, 1),
            OutputConstraint::JsonSchema(
                serde_json::json!({"type": "object", "properties": {"a": {"type": "nonsense"}}}),
            ),
        ))
        .unwrap_err();
    assert!(matches!(err, Refusal::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("json_schema"), "{err}");
}
