//! Random arrivals, cancellations, `n`, failing requests and pool sizes: after every step the
//! invariants hold (`check_invariants`), every request ends exactly once, the engine never
//! stops making progress, and outputs equal what each request gets alone.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::fake_model::POISON;
use super::*;
use crate::engine::scheduler::Abort;

struct Submitted {
    prompt: Vec<u32>,
    max_tokens: usize,
    n: usize,
    poisoned: bool,
    cancelled: bool,
}

fn simulate(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cfg = config(rng.random_range(1..=8), rng.random_range(1..=48));
    cfg.prefix_cache = rng.random_bool(0.5);
    if rng.random_bool(0.5) {
        let ngram_min = rng.random_range(1..=2);
        cfg.speculative = Some(crate::engine::SpeculativeConfig {
            num_tokens: rng.random_range(1..=5),
            ngram_min,
            ngram_max: rng.random_range(ngram_min..=4),
            max_batch: rng.random_range(1..=8),
        });
    }
    let repetitive = rng.random_bool(0.5);
    // The longest sequence below (40 + 30 positions, no sharing) needs 18 rows of 8 blocks.
    let kv_blocks = rng.random_range(18 * 8..=80 * 8);
    let mut h = Harness::with_model(cfg.clone(), kv_blocks, repetitive);
    let shared_prefixes: Vec<Vec<u32>> = (0..3).map(|i| prompt(16, 50 + i)).collect();
    let mut submitted: HashMap<u64, Submitted> = HashMap::new();
    let arrivals = 60;
    let mut steps = 0;
    let mut tick = 0;
    loop {
        if tick < arrivals {
            for _ in 0..rng.random_range(0..=2) {
                let mut p = if rng.random_bool(0.4) {
                    shared_prefixes[rng.random_range(0..3)].clone()
                } else {
                    Vec::new()
                };
                let extra = rng.random_range(1..=24);
                p.extend(prompt(extra, rng.random_range(0..1000)));
                let poisoned = rng.random_bool(0.07);
                if poisoned {
                    let at = rng.random_range(0..p.len());
                    p[at] = POISON;
                }
                let n = rng.random_range(1..=4).min(cfg.max_batch_size);
                let max_tokens = rng.random_range(1..=30);
                let ratio = [0.0, 0.25, 0.5, 0.75][rng.random_range(0..4)];
                let id = h
                    .submit(request(p.clone(), ratio, max_tokens, n))
                    .expect("every generated request fits");
                submitted.insert(
                    id,
                    Submitted {
                        prompt: p,
                        max_tokens,
                        n,
                        poisoned,
                        cancelled: false,
                    },
                );
            }
        }
        if rng.random_bool(0.05) {
            let live: Vec<u64> = h.scheduler.requests.keys().copied().collect();
            if !live.is_empty() {
                let id = live[rng.random_range(0..live.len())];
                h.scheduler.abort(id, Abort::Cancelled);
                submitted.get_mut(&id).unwrap().cancelled = true;
                check_invariants(&h.scheduler);
            }
        }
        h.step();
        steps += 1;
        tick += 1;
        assert!(steps < 20_000, "seed {seed}: no progress");
        if tick >= arrivals && h.scheduler.is_idle() {
            break;
        }
    }
    for (id, s) in &submitted {
        let o = h.outcome(*id, s.n);
        let ended = h.events[id]
            .iter()
            .filter(|e| matches!(e, EngineEvent::Done { .. } | EngineEvent::Error { .. }))
            .count();
        if s.cancelled {
            assert!(ended <= 1, "seed {seed}: request {id} ended {ended} times");
            continue;
        }
        assert_eq!(ended, 1, "seed {seed}: request {id} must end exactly once");
        if s.poisoned {
            assert!(
                o.error.is_some(),
                "seed {seed}: poisoned request {id} succeeded"
            );
        } else {
            assert_eq!(o.error, None, "seed {seed}: request {id}");
            assert_eq!(
                o.tokens,
                h.expected(&s.prompt, s.max_tokens, s.n),
                "seed {seed}: request {id}"
            );
        }
    }
    assert_eq!(h.scheduler.queued_requests(), 0);
    let kv = h.scheduler.kv();
    assert_eq!(
        kv.pool().stats().used(),
        kv.cached_blocks(),
        "seed {seed}: only the prefix cache holds blocks at the end"
    );
}

#[test]
fn random_workloads_keep_every_invariant() {
    for seed in 0..150 {
        simulate(seed);
    }
}
