//! Continuous batching: mixed ratios in one batch give each request exactly what it gets alone;
//! seeds, pool exhaustion, cancellation and the prefix cache keep outputs unchanged.

mod common;

use common::*;
use epas_server::engine::{
    EngineConfig, FinishReason, GenerationRequest, KvCacheSize, SubmitError,
};

const RATIOS: [f64; 4] = [0.0, 0.25, 0.5, 0.75];

fn mixed_requests(layers: usize, n: usize, max_tokens: usize) -> Vec<GenerationRequest> {
    (0..n)
        .map(|i| {
            request(
                prompt(3 + 11 * i, i as u32),
                layers,
                RATIOS[i % 4],
                max_tokens,
            )
        })
        .collect()
}

/// Submits all requests at once and collects every outcome.
fn concurrently(e: &epas_server::engine::EngineHandle, reqs: &[GenerationRequest]) -> Vec<Outcome> {
    let rxs: Vec<_> = reqs
        .iter()
        .map(|r| (submit(e, r.clone()), r.params.n))
        .collect();
    let handles: Vec<_> = rxs
        .into_iter()
        .map(|(rx, n)| std::thread::spawn(move || collect(rx, n)))
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn sixteen_mixed_ratio_requests_equal_each_alone_on_a_test_model() {
    let model = tiny();
    let reqs = mixed_requests(8, 16, 24);
    // A small token budget forces chunked prefill next to running decodes.
    let e = engine(
        &model,
        EngineConfig {
            max_batch_tokens: 48,
            prefix_cache: false,
            ..Default::default()
        },
    );
    let together = concurrently(&e, &reqs);
    assert!(e.snapshot().steps > 24, "requests shared steps");
    for (i, (req, got)) in reqs.iter().zip(&together).enumerate() {
        let solo = alone(&model, req.clone());
        assert_eq!(
            got.tokens,
            solo.tokens,
            "request {i} (ratio {})",
            RATIOS[i % 4]
        );
        assert_eq!(got.tokens[0].len(), 24);
        assert_eq!(got.finish, vec![Some(FinishReason::Length)]);
        let usage = got.usage.unwrap();
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens),
            (req.prompt.len(), 24)
        );
    }
    wait_idle(&e);
    assert_eq!(e.snapshot().kv_blocks_used, 0);
}

#[test]
fn sixteen_mixed_ratio_requests_equal_each_alone_on_smollm2() {
    let model = smollm2().clone();
    let reqs = mixed_requests(30, 16, 32);
    let e = engine(
        &model,
        EngineConfig {
            max_batch_tokens: 256,
            prefix_cache: false,
            ..Default::default()
        },
    );
    let together = concurrently(&e, &reqs);
    for (i, (req, got)) in reqs.iter().zip(&together).enumerate() {
        let solo = alone(&model, req.clone());
        assert_eq!(
            got.tokens,
            solo.tokens,
            "request {i} (ratio {})",
            RATIOS[i % 4]
        );
        assert_eq!(got.tokens[0].len(), 32);
    }
}

#[test]
fn same_seed_same_text_whatever_else_is_in_the_batch() {
    let model = tiny();
    let mut sampled = request(prompt(9, 77), 8, 0.5, 20);
    sampled.params.sampling.temperature = 0.9;
    sampled.params.sampling.top_p = 0.95;
    sampled.params.sampling.seed = 1234;
    let solo = alone(&model, sampled.clone());
    let e = engine(
        &model,
        EngineConfig {
            max_batch_tokens: 32,
            ..Default::default()
        },
    );
    let mut reqs = mixed_requests(8, 7, 20);
    reqs.insert(3, sampled.clone());
    let together = concurrently(&e, &reqs);
    assert_eq!(together[3].tokens, solo.tokens);
    let mut other_seed = sampled;
    other_seed.params.sampling.seed = 4321;
    assert_ne!(alone(&model, other_seed).tokens, solo.tokens);
}

#[test]
fn pool_exhaustion_waits_or_preempts_and_every_request_completes() {
    let model = tiny();
    let reqs = mixed_requests(8, 12, 40);
    // 8 layers, 16-token blocks: the longest sequence (prompt 135 + 40 tokens, ratio 0) needs
    // 11 x 16 = 176 blocks; 200 blocks hold it, but far from all twelve requests at once.
    let config = EngineConfig {
        kv_cache: KvCacheSize::Blocks(200),
        prefix_cache: false,
        ..Default::default()
    };
    let e = engine(&model, config);
    let together = concurrently(&e, &reqs);
    for (i, (req, got)) in reqs.iter().zip(&together).enumerate() {
        assert!(got.error.is_none(), "request {i}: {:?}", got.error);
        assert_eq!(got.tokens, alone(&model, req.clone()).tokens, "request {i}");
    }
    wait_idle(&e);
    let s = e.snapshot();
    assert_eq!(s.kv_blocks_used, 0);
    assert!(
        s.preemptions > 0,
        "the test should exercise preemption: {s:?}"
    );
}

#[test]
fn a_prompt_larger_than_the_pool_is_an_error_not_a_hang() {
    let model = tiny();
    let e = engine(
        &model,
        EngineConfig {
            kv_cache: KvCacheSize::Blocks(10),
            ..Default::default()
        },
    );
    let err = invalid(e.validate(request(prompt(100, 1), 8, 0.0, 4)));
    assert_eq!(err.param, "prompt");
    assert!(err.message.contains("KV cache"), "{err}");
}

#[test]
fn cancelling_half_frees_their_blocks_and_leaves_the_others_unchanged() {
    let model = tiny();
    let reqs = mixed_requests(8, 16, 60);
    let e = engine(
        &model,
        EngineConfig {
            prefix_cache: false,
            ..Default::default()
        },
    );
    let mut keep = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let mut rx = submit(&e, r.clone());
        if i % 2 == 0 {
            keep.push((i, std::thread::spawn(move || collect(rx, 1))));
        } else {
            // Read a few tokens, then hang up mid-stream.
            std::thread::spawn(move || {
                for _ in 0..3 {
                    rx.blocking_recv();
                }
                drop(rx);
            });
        }
    }
    for (i, h) in keep {
        let got = h.join().unwrap();
        assert_eq!(
            got.tokens,
            alone(&model, reqs[i].clone()).tokens,
            "request {i}"
        );
    }
    wait_idle(&e);
    let s = e.snapshot();
    assert_eq!(s.kv_blocks_used, 0);
    assert_eq!(s.cancellations, 8);
}

#[test]
fn prefix_cache_hits_give_the_same_output_as_misses() {
    let model = tiny();
    let e = engine(&model, EngineConfig::default());
    let shared = prompt(70, 5);
    let first = request(shared.clone(), 8, 0.5, 12);
    let a = collect(submit(&e, first.clone()), 1);
    let mut longer = shared.clone();
    longer.extend(prompt(9, 6));
    let second = request(longer, 8, 0.5, 12);
    let b = collect(submit(&e, second.clone()), 1);
    assert!(b.usage.unwrap().cached_tokens >= 64, "{:?}", b.usage);
    assert_eq!(b.tokens, alone(&model, second).tokens);
    assert_eq!(a.tokens, alone(&model, first.clone()).tokens);
    // The same prompt at another ratio does not hit.
    let other = request(shared, 8, 0.25, 4);
    let c = collect(submit(&e, other), 1);
    assert_eq!(c.usage.unwrap().cached_tokens, 0);
    let s = e.snapshot();
    assert_eq!((s.prefix_hits, s.prefix_misses), (1, 2));
}

#[test]
fn stop_strings_stop_tokens_min_tokens_and_n() {
    let model = smollm2().clone();
    let text_prompt = model
        .1
        .encode("Mr. Speaker, Mr. Vice President, Members of Congress")
        .unwrap();
    // llama.cpp's greedy continuation: ", and the President.\n\nThe President's office is at..."
    let mut req = request(text_prompt.clone(), 30, 0.0, 30);
    req.params.stop = vec!["office".into(), "President.".into()];
    let out = alone(&model, req);
    assert_eq!(out.text[0], ", and the ");
    assert_eq!(out.finish[0], Some(FinishReason::Stop));
    assert_eq!(out.stop_sequence[0].as_deref(), Some("President."));

    let mut req = request(text_prompt.clone(), 30, 0.0, 30);
    req.params.stop_token_ids = vec![30]; // "."
    let out = alone(&model, req);
    assert_eq!(out.text[0], ", and the President");
    assert_eq!(out.finish[0], Some(FinishReason::Stop));
    assert_eq!(out.stop_sequence[0], None);

    let mut req = request(text_prompt.clone(), 30, 0.0, 5);
    req.params.n = 3;
    req.params.sampling.temperature = 1.0;
    req.params.sampling.seed = 7;
    let out = alone(&model, req);
    assert_eq!(out.tokens.len(), 3);
    assert!(out.tokens.iter().all(|t| t.len() == 5));
    assert_eq!(out.usage.unwrap().completion_tokens, 15);

    let mut req = request(text_prompt, 30, 0.0, 3);
    req.params.sampling.logprobs = Some(2);
    let e = engine(&model, EngineConfig::default());
    let mut rx = submit(&e, req);
    let Some(epas_server::engine::EngineEvent::Token {
        logprobs: Some(lp),
        token,
        ..
    }) = rx.blocking_recv()
    else {
        panic!("expected a token with logprobs");
    };
    assert!(lp.logprob <= 0.0 && lp.top.len() == 2 && lp.top[0].0 == token);
}

#[test]
fn a_full_queue_refuses_with_overloaded() {
    let model = tiny();
    let e = engine(
        &model,
        EngineConfig {
            max_waiting: 2,
            max_batch_size: 1,
            ..Default::default()
        },
    );
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..8 {
        match e.submit(e.validate(request(prompt(40, i), 8, 0.0, 200)).unwrap()) {
            Ok(rx) => held.push(rx),
            Err(SubmitError::Overloaded { .. }) => refused += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert!(refused >= 4, "{refused}");
    drop(held);
    wait_idle(&e);
}
