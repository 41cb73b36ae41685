//! Speculative decoding on SmolLM2: greedy output with drafts is token for token the output
//! without them, for copy-heavy and ordinary prompts at every sharing ratio, in mixed batches.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use epas_server::engine::{
    EngineConfig, EngineHandle, EngineObserver, GenerationRequest, SpeculativeConfig,
};

#[derive(Default)]
struct DraftCounts {
    drafted: AtomicUsize,
    accepted: AtomicUsize,
}

impl EngineObserver for DraftCounts {
    fn speculated(&self, _ratio: f64, drafted: usize, accepted: usize) {
        self.drafted.fetch_add(drafted, Ordering::Relaxed);
        self.accepted.fetch_add(accepted, Ordering::Relaxed);
    }
}

const TEXTS: &[&str] = &[
    "The Congress shall have power to lay and collect taxes, duties, imposts and excises, to pay the debts and provide for the common defence and general welfare of the United States.",
    "fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n\nfn sub(a: i32, b: i32) -> i32 {\n    a - b\n}",
    "We the People of the United States, in Order to form a more perfect Union, establish Justice, insure domestic Tranquility.",
];

fn prompts(tokenizer: &epas_model::TextTokenizer) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    for text in TEXTS {
        // Copy-heavy: the text, then an instruction to repeat it and its first words.
        let first: String = text.split(' ').take(4).collect::<Vec<_>>().join(" ");
        out.push(format!("{text}\n\nRepeat the text above exactly:\n{first}"));
        // Ordinary continuation.
        out.push(text.to_string());
    }
    out.push("Mr. Speaker, Mr. Vice President, Members of Congress".into());
    out.iter().map(|p| tokenizer.encode(p).unwrap()).collect()
}

fn run_all(e: &EngineHandle, reqs: &[GenerationRequest]) -> Vec<Vec<u32>> {
    let rxs: Vec<_> = reqs.iter().map(|r| submit(e, r.clone())).collect();
    rxs.into_iter()
        .map(|rx| {
            let out = collect(rx, 1);
            assert_eq!(out.error, None);
            out.tokens[0].clone()
        })
        .collect()
}

#[test]
fn greedy_output_with_drafts_equals_output_without_on_smollm2() {
    let model = smollm2().clone();
    let mut reqs = Vec::new();
    for (i, p) in prompts(&model.1).into_iter().enumerate() {
        for ratio in [0.0, 0.25, 0.5, 0.75] {
            let mut r = request(p.clone(), 30, ratio, 40);
            r.params.ignore_eos = i % 2 == 0;
            reqs.push(r);
        }
    }
    let plain = engine(
        &model,
        EngineConfig {
            prefix_cache: false,
            ..Default::default()
        },
    );
    let counts = Arc::new(DraftCounts::default());
    let drafting = EngineHandle::start(
        model.0.clone(),
        model.1.clone(),
        EngineConfig {
            prefix_cache: false,
            speculative: Some(SpeculativeConfig {
                num_tokens: 4,
                ngram_min: 1,
                ngram_max: 4,
                max_batch: 64,
            }),
            ..Default::default()
        },
        counts.clone(),
    )
    .unwrap();
    let expected = run_all(&plain, &reqs);
    let got = run_all(&drafting, &reqs);
    for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(a, b, "request {i}: drafts changed the greedy output");
    }
    let (drafted, accepted) = (
        counts.drafted.load(Ordering::Relaxed),
        counts.accepted.load(Ordering::Relaxed),
    );
    eprintln!("{drafted} drafted, {accepted} kept");
    assert!(accepted > 20, "{drafted} drafted, {accepted} kept");
    wait_idle(&drafting);
    assert_eq!(drafting.snapshot().kv_blocks_used, 0);
}
