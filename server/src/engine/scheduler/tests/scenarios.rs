//! The defects of the first engine, each as a scenario on the scheduler.

use super::fake_model::{PANIC, POISON};
use super::*;
use crate::engine::scheduler::Abort;

#[test]
fn mixed_requests_give_what_each_gives_alone() {
    let mut h = Harness::new(config(8, 16), 400);
    let reqs: Vec<_> = (0..10)
        .map(|i| {
            (
                prompt(3 + 7 * i, i as u32),
                [0.0, 0.25, 0.5, 0.75][i % 4],
                5 + i,
                1 + i % 3,
            )
        })
        .collect();
    let ids: Vec<u64> = reqs
        .iter()
        .map(|(p, r, m, n)| h.submit(request(p.clone(), *r, *m, *n)).unwrap())
        .collect();
    h.run_until_idle(500);
    for (id, (p, _, m, n)) in ids.iter().zip(&reqs) {
        let o = h.outcome(*id, *n);
        assert_eq!(o.error, None);
        assert_eq!(o.tokens, h.expected(p, *m, *n), "request {id}");
        assert_eq!(o.finish, vec![Some(FinishReason::Length); *n]);
        assert_eq!(o.usage.unwrap().completion_tokens, m * n);
    }
    assert_eq!(h.scheduler.kv().pool().stats().used(), 0);
}

#[test]
fn a_sequence_that_cannot_grow_alone_fails_instead_of_looping() {
    // The limits claim more blocks than the pool has, so validation lets through a sequence
    // that outgrows the pool: running alone, it must fail, not be preempted forever.
    let mut h = Harness::new(config(4, 8), 16);
    h.validator.limits.kv_blocks = 1000;
    let id = h.submit(request(prompt(10, 1), 0.0, 40, 1)).unwrap();
    h.run_until_idle(100);
    let o = h.outcome(id, 1);
    assert!(o.error.unwrap().contains("KV cache"));
    assert_eq!(h.scheduler.counts().preemptions, 0);
    assert_eq!(h.scheduler.kv().pool().stats().used(), 0);
}

#[test]
fn a_poisoned_request_fails_alone_and_all_its_choices_go() {
    let mut h = Harness::new(config(4, 64), 400);
    let good = h.submit(request(prompt(30, 2), 0.0, 6, 1)).unwrap();
    let mut bad_prompt = prompt(8, 3);
    bad_prompt[5] = POISON;
    // Three choices, batch of four: one choice is still waiting when the first ones fail.
    let bad = h.submit(request(bad_prompt, 0.5, 6, 3)).unwrap();
    let other = h.submit(request(prompt(12, 4), 0.25, 6, 2)).unwrap();
    let first = h.step();
    assert!(first.rows.iter().any(|r| r.seq.request == bad));
    assert!(first.rows.iter().any(|r| r.seq.request == good));
    h.run_until_idle(100);
    assert!(h.outcome(bad, 3).error.unwrap().contains("poisoned"));
    assert_eq!(h.outcome(good, 1).tokens, h.expected(&prompt(30, 2), 6, 1));
    assert_eq!(h.outcome(other, 2).tokens, h.expected(&prompt(12, 4), 6, 2));
}

#[test]
fn cancelling_removes_running_and_waiting_choices() {
    let mut h = Harness::new(config(2, 64), 400);
    let id = h.submit(request(prompt(5, 5), 0.0, 30, 2)).unwrap();
    let later = h.submit(request(prompt(5, 6), 0.0, 3, 1)).unwrap();
    h.step();
    assert_eq!(h.scheduler.running.len(), 2);
    assert_eq!(h.scheduler.queued_requests(), 1);
    let sent = h.events[&id].len();
    h.scheduler.abort(id, Abort::Cancelled);
    check_invariants(&h.scheduler);
    h.run_until_idle(20);
    assert_eq!(
        h.events[&id].len(),
        sent,
        "nothing is sent to a request that went away"
    );
    assert_eq!(h.outcome(later, 1).tokens, h.expected(&prompt(5, 6), 3, 1));
    assert_eq!(h.scheduler.counts().cancellations, 1);
    assert_eq!(h.scheduler.kv().pool().stats().used(), 0);
}

#[test]
fn a_failed_request_with_a_choice_never_admitted_leaves_no_queued_slot() {
    // 4 layers, 4-position blocks: 8 blocks per 4 positions without sharing. 48 blocks hold
    // one 24-position sequence, so choice 1 is never admitted while choice 0 runs.
    let mut h = Harness::new(config(2, 64), 48);
    let id = h.submit(request(prompt(12, 7), 0.0, 10, 2)).unwrap();
    h.step();
    assert_eq!(h.scheduler.queued_requests(), 1);
    // Poison the running choice's next token: its next step fails.
    let running = &mut h.scheduler.running[0].seq;
    *running.tokens.last_mut().unwrap() = POISON;
    h.run_until_idle(20);
    assert!(h.outcome(id, 2).error.is_some());
    assert_eq!(h.scheduler.queued_requests(), 0);
}

#[test]
fn the_oldest_always_advances_and_a_preempted_sequence_is_not_readmitted_at_once() {
    // Room for about two growing sequences: the youngest is preempted; in that step nothing is
    // admitted, and every request still finishes with what it gets alone.
    let mut h = Harness::new(config(8, 64), 96);
    let ids: Vec<u64> = (0..4)
        .map(|i| h.submit(request(prompt(6, 10 + i), 0.0, 40, 1)).unwrap())
        .collect();
    let mut preempting_steps = 0;
    let mut steps = 0;
    while !h.scheduler.is_idle() {
        let before = h.scheduler.counts().preemptions;
        let running_before: Vec<_> = h.scheduler.running.iter().map(|r| r.seq.id).collect();
        let plan = h.step();
        steps += 1;
        assert!(steps < 500, "no progress");
        if h.scheduler.counts().preemptions > before {
            preempting_steps += 1;
            assert!(
                plan.rows.iter().all(|r| running_before.contains(&r.seq)),
                "a step that preempts admits nothing"
            );
        }
        if let Some(oldest) = running_before.first() {
            assert!(
                plan.rows.iter().any(|r| r.seq == *oldest),
                "the oldest running sequence runs in every step"
            );
        }
    }
    assert!(preempting_steps > 0, "the scenario must preempt");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            h.outcome(*id, 1).tokens,
            h.expected(&prompt(6, 10 + i as u32), 40, 1)
        );
    }
    // Each sequence needs the whole pool at its end, so each may be preempted by every older
    // one once; never more.
    assert!(
        h.scheduler.counts().preemptions <= 6,
        "{:?}",
        h.scheduler.counts()
    );
}

#[test]
fn a_prefix_query_counts_once_however_long_admission_waits() {
    let mut cfg = config(1, 64);
    cfg.prefix_cache = true;
    let mut h = Harness::new(cfg, 400);
    let shared = prompt(20, 8);
    let first = h.submit(request(shared.clone(), 0.5, 4, 1)).unwrap();
    h.run_until_idle(20);
    // The second waits several steps behind the third (batch of one), then hits.
    let third = h.submit(request(prompt(9, 9), 0.5, 6, 1)).unwrap();
    let mut longer = shared.clone();
    longer.extend(prompt(5, 10));
    let second = h.submit(request(longer.clone(), 0.5, 4, 1)).unwrap();
    h.run_until_idle(40);
    let counts = h.scheduler.counts();
    assert_eq!((counts.prefix_hits, counts.prefix_misses), (1, 2));
    assert_eq!(h.outcome(second, 1).usage.unwrap().cached_tokens, 20);
    assert_eq!(h.outcome(second, 1).tokens, h.expected(&longer, 4, 1));
    assert!(h.outcome(first, 1).error.is_none() && h.outcome(third, 1).error.is_none());
}

#[test]
#[should_panic(expected = "panic token")]
fn the_fake_model_panics_on_its_panic_token() {
    let mut h = Harness::new(config(1, 64), 400);
    h.submit(request(vec![PANIC], 0.0, 2, 1)).unwrap();
    h.step();
}

#[test]
fn arriving_prompts_take_only_the_prefill_budget_while_others_decode() {
    // Inter-token gaps of running streams are bounded by the prompt tokens a step carries: with
    // sequences decoding, each step prefills at most `max_prefill_while_decoding` tokens, and
    // every decoding sequence still runs in every step; with nothing decoding, prompts take the
    // whole step.
    let mut cfg = config(16, 64);
    cfg.max_prefill_while_decoding = 8;
    let mut h = Harness::new(cfg, 2000);
    let first: Vec<u64> = (0..2)
        .map(|i| h.submit(request(prompt(20, i), 0.0, 30, 1)).unwrap())
        .collect();
    let plan = h.step();
    let prefilled: usize = plan.rows.iter().map(|r| r.tokens.len()).sum();
    assert_eq!(
        prefilled, 40,
        "nothing decodes yet: both prompts in one step"
    );
    let later: Vec<u64> = (2..6)
        .map(|i| h.submit(request(prompt(30, i), 0.5, 10, 1)).unwrap())
        .collect();
    let mut steps = 0;
    while !h.scheduler.is_idle() {
        let decoding: Vec<_> = h
            .scheduler
            .running
            .iter()
            .filter(|r| r.is_decoding())
            .map(|r| r.seq.id)
            .collect();
        let plan = h.step();
        steps += 1;
        assert!(steps < 200, "no progress");
        for id in &decoding {
            assert!(
                plan.rows
                    .iter()
                    .any(|r| r.seq == *id && r.tokens.len() == 1),
                "a decoding sequence runs in every step"
            );
        }
        let prefill: usize = plan
            .rows
            .iter()
            .filter(|r| r.prefill)
            .map(|r| r.tokens.len())
            .sum();
        if !decoding.is_empty() {
            assert!(prefill <= 8, "step {steps} prefilled {prefill} tokens");
        }
    }
    for (i, id) in first.iter().chain(&later).enumerate() {
        let (len, max) = if i < 2 { (20, 30) } else { (30, 10) };
        assert_eq!(
            h.outcome(*id, 1).tokens,
            h.expected(&prompt(len, i as u32), max, 1)
        );
    }
}
