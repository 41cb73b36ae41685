//! Speculative decoding on the scheduler: drafts are checked in the step of the pending token,
//! kept as far as the model agrees, and the output (tokens, text, stops, lengths, logprobs) is
//! exactly what decoding without drafts gives.

use super::*;
use crate::engine::SpeculativeConfig;

fn speculative(cfg: EngineConfig, k: usize) -> EngineConfig {
    EngineConfig {
        speculative: Some(SpeculativeConfig {
            num_tokens: k,
            ngram_min: 1,
            ngram_max: 3,
            max_batch: 8,
        }),
        ..cfg
    }
}

/// Runs `requests` on two harnesses, with and without drafts; returns both.
fn both(requests: &[GenerationRequest], repetitive: bool, k: usize) -> (Harness, Harness) {
    let mut plain = Harness::with_model(config(8, 64), 2000, repetitive);
    let mut drafted = Harness::with_model(speculative(config(8, 64), k), 2000, repetitive);
    for h in [&mut plain, &mut drafted] {
        for r in requests {
            h.submit(r.clone()).unwrap();
        }
        h.run_until_idle(2000);
    }
    (plain, drafted)
}

/// Each request's stream per choice (choices interleave differently when drafts are kept).
fn per_choice(h: &Harness) -> Vec<(u64, Vec<Vec<EngineEvent>>)> {
    let mut ids: Vec<u64> = h.events.keys().copied().collect();
    ids.sort();
    ids.into_iter()
        .map(|id| {
            let mut choices: Vec<Vec<EngineEvent>> = vec![Vec::new(); 5];
            for e in &h.events[&id] {
                let index = match e {
                    EngineEvent::Token { index, .. } | EngineEvent::Finished { index, .. } => {
                        *index
                    }
                    _ => 4,
                };
                choices[index].push(e.clone());
            }
            (id, choices)
        })
        .collect()
}

fn drafted_and_kept(h: &Harness) -> (u64, u64) {
    (
        h.scheduler.counts().drafted,
        h.scheduler.counts().draft_accepted,
    )
}

#[test]
fn kept_drafts_give_the_same_tokens_in_fewer_steps() {
    let requests: Vec<_> = (0..6)
        .map(|i| {
            request(
                prompt(5 + 3 * i, i as u32),
                [0.0, 0.5][i % 2],
                60,
                1 + i % 2,
            )
        })
        .collect();
    let (plain, drafted) = both(&requests, true, 4);
    assert!(
        per_choice(&drafted) == per_choice(&plain),
        "every choice's events equal"
    );
    let (made, kept) = drafted_and_kept(&drafted);
    assert!(made > 0 && kept * 2 > made, "{made} drafted, {kept} kept");
    assert!(
        drafted.scheduler.counts().steps * 2 < plain.scheduler.counts().steps,
        "{:?} vs {:?}",
        drafted.scheduler.counts(),
        plain.scheduler.counts()
    );
    assert_eq!(drafted.scheduler.kv().pool().stats().used(), 0);
}

#[test]
fn rejected_drafts_change_nothing_and_pause_drafting() {
    // Repeated prompt text makes drafts that a position-dependent model rejects.
    let mut p = prompt(6, 3);
    p.extend(p.clone());
    p.extend(p.clone());
    let requests = vec![request(p, 0.25, 120, 1)];
    let (plain, drafted) = both(&requests, false, 3);
    assert!(per_choice(&drafted) == per_choice(&plain));
    let (made, kept) = drafted_and_kept(&drafted);
    assert!(made > 0, "the prompt's repeats make drafts");
    assert!(kept * 3 < made, "{made} drafted, {kept} kept");
    assert!(
        made < 60,
        "failing drafts pause drafting: {made} drafted in 120 steps"
    );
}

#[test]
fn stops_lengths_and_logprobs_inside_kept_drafts_are_as_without_drafts() {
    let h = Harness::with_model(config(8, 64), 100, true);
    let p = prompt(7, 9);
    let text_tokens = h.model.continuation(&p, 40);
    let tokenizer = tokenizer();
    let text = tokenizer.decode(&text_tokens, true).unwrap();
    let mut requests = Vec::new();
    // A stop string from the middle of the text, a stop token, a short max_tokens, logprobs.
    let mut with_stop = request(p.clone(), 0.0, 40, 1);
    let middle: String = text
        .chars()
        .skip(text.chars().count() / 2)
        .take(3)
        .collect();
    with_stop.params.stop = vec![middle];
    requests.push(with_stop);
    let mut with_stop_token = request(p.clone(), 0.0, 40, 2);
    with_stop_token.params.stop_token_ids = vec![text_tokens[17]];
    requests.push(with_stop_token);
    requests.push(request(p.clone(), 0.5, 9, 1));
    let mut with_logprobs = request(p.clone(), 0.0, 30, 1);
    with_logprobs.params.sampling.logprobs = Some(2);
    requests.push(with_logprobs);
    let mut min_tokens = request(p, 0.0, 30, 1);
    min_tokens.params.min_tokens = 12;
    min_tokens.params.stop_token_ids = vec![text_tokens[3]];
    requests.push(min_tokens);
    let (plain, drafted) = both(&requests, true, 5);
    assert!(per_choice(&drafted) == per_choice(&plain));
    assert!(drafted_and_kept(&drafted).1 > 0);
}

#[test]
fn a_request_can_opt_out_and_a_large_batch_does_not_draft() {
    let mut opted_out = request(prompt(5, 1), 0.0, 40, 1);
    opted_out.params.speculative = false;
    let (_, drafted) = both(&[opted_out], true, 4);
    assert_eq!(drafted_and_kept(&drafted), (0, 0));
    let mut cfg = speculative(config(8, 64), 4);
    cfg.speculative.as_mut().unwrap().max_batch = 2;
    let mut h = Harness::with_model(cfg, 2000, true);
    for i in 0..3 {
        h.submit(request(prompt(5, i), 0.0, 40, 1)).unwrap();
    }
    h.run_until_idle(500);
    assert_eq!(
        drafted_and_kept(&h),
        (0, 0),
        "three running sequences exceed max_batch 2"
    );
}

#[test]
fn seeded_sampled_output_is_the_same_with_and_without_drafts() {
    // The fake model puts about a third of the probability on its prediction at temperature 1,
    // so drafts are both kept and rejected; a seed must give the same text either way (and so
    // whatever else runs beside it decides nothing).
    let requests: Vec<_> = (0..4)
        .map(|i| {
            let mut r = request(prompt(6 + i, i as u32), [0.0, 0.5][i % 2], 50, 1);
            r.params.sampling.temperature = 1.0;
            r.params.sampling.seed = 100 + i as u64;
            r
        })
        .collect();
    let (plain, drafted) = both(&requests, true, 4);
    let (made, kept) = drafted_and_kept(&drafted);
    assert!(
        made > 0 && kept > 0 && kept < made,
        "{made} drafted, {kept} kept"
    );
    assert!(per_choice(&drafted) == per_choice(&plain));
}

#[test]
fn drafts_never_take_the_blocks_later_sequences_need() {
    // A pool just large enough for three sequences that grow together: a draft that takes the
    // last free blocks would force a later sequence out (preempted, prefilled again).
    // Repeated prompt text makes drafts; the position-dependent model rejects most of them.
    let requests: Vec<_> = (0..3)
        .map(|i| {
            let mut p = prompt(10, i as u32);
            p.extend(p.clone());
            p.extend(p.clone());
            request(p, 0.0, 80, 1)
        })
        .collect();
    for blocks in (480..=760).step_by(8) {
        let run = |cfg: EngineConfig| {
            let mut h = Harness::with_model(cfg, blocks, false);
            for r in &requests {
                h.submit(r.clone()).unwrap();
            }
            h.run_until_idle(2000);
            h
        };
        let plain = run(config(8, 64));
        let drafted = run(speculative(config(8, 64), 4));
        assert!(per_choice(&drafted) == per_choice(&plain));
        assert!(drafted_and_kept(&drafted).0 > 0);
        assert!(
            drafted.scheduler.counts().preemptions <= plain.scheduler.counts().preemptions,
            "{blocks} blocks: {} preemptions with drafts, {} without",
            drafted.scheduler.counts().preemptions,
            plain.scheduler.counts().preemptions
        );
    }
}

#[test]
fn a_sequence_prefilled_again_under_a_small_prefill_budget_gets_no_drafts() {
    // A preempted sequence prefills its prompt and generated tokens again; a prefill budget of
    // one token per step cuts those chunks to single tokens, which must not be taken for decode
    // steps (drafts there would overwrite positions of tokens already generated).
    let small = |cfg: EngineConfig| EngineConfig {
        max_prefill_while_decoding: 1,
        ..cfg
    };
    let requests: Vec<_> = (0..6)
        .map(|i| request(prompt(6 + i, 10 + i as u32), 0.0, 40, 1))
        .collect();
    let mut preempting_pools = 0;
    for blocks in (112..=400).step_by(8) {
        let mut plain = Harness::with_model(small(config(8, 64)), blocks, true);
        let mut drafted = Harness::with_model(small(speculative(config(8, 64), 4)), blocks, true);
        for h in [&mut plain, &mut drafted] {
            for r in &requests {
                h.submit(r.clone()).unwrap();
            }
            h.run_until_idle(4000);
        }
        if drafted.scheduler.counts().preemptions > 0 {
            preempting_pools += 1;
        }
        assert!(
            per_choice(&drafted) == per_choice(&plain),
            "{blocks} blocks: the streams differ"
        );
    }
    assert!(preempting_pools > 5, "the pools must preempt");
}
