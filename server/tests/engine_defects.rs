//! Engine defects found by review (issue 19). Each test failed on the engine before v2 (in its
//! first form, with the old `submit`): the livelock hung, a batch-mate's error failed a good
//! request, a failed `n = 2` request leaked a slot of the 429 counter, and the pressure test
//! counted 206 preemptions for 24 sequences.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use epas_model::BlockPool;
use epas_model::{EpasLlama, KvDtype, ModelError, SequenceStep, TextTokenizer};
use epas_server::engine::{EngineConfig, EngineHandle, KvCacheSize, NoObserver, StepModel};

/// Collects a request's events on a thread; `None` when it has not ended within `limit`.
fn collect_within(
    rx: tokio::sync::mpsc::UnboundedReceiver<epas_server::engine::EngineEvent>,
    n: usize,
    limit: Duration,
) -> Option<Outcome> {
    let (tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(collect(rx, n));
    });
    done.recv_timeout(limit).ok()
}

/// The test model, failing every forward whose batch holds `poison` (as a kernel or device
/// error would: the whole call fails, not one row).
struct FailsOn {
    model: Arc<EpasLlama>,
    poison: u32,
}

impl StepModel for FailsOn {
    fn num_layers(&self) -> usize {
        self.model.num_layers()
    }
    fn vocab_size(&self) -> usize {
        StepModel::vocab_size(self.model.as_ref())
    }
    fn kv_width(&self) -> usize {
        self.model.kv_width()
    }
    fn max_context(&self) -> usize {
        StepModel::max_context(self.model.as_ref())
    }
    fn block_pool(
        &self,
        blocks: usize,
        block_size: usize,
        dtype: KvDtype,
    ) -> epas_model::Result<BlockPool> {
        StepModel::block_pool(self.model.as_ref(), blocks, block_size, dtype)
    }
    fn forward(&self, steps: &mut [SequenceStep<'_>]) -> epas_model::Result<Vec<Option<Vec<f32>>>> {
        if steps.iter().any(|s| s.tokens.contains(&self.poison)) {
            return Err(ModelError::Batch("poisoned batch".into()));
        }
        StepModel::forward(self.model.as_ref(), steps)
    }
}

const POISON: u32 = 4242;

fn failing_engine(
    model: &(Arc<EpasLlama>, Arc<TextTokenizer>),
    config: EngineConfig,
) -> EngineHandle {
    let failing = FailsOn {
        model: model.0.clone(),
        poison: POISON,
    };
    EngineHandle::start(
        Arc::new(failing),
        model.1.clone(),
        config,
        Arc::new(NoObserver),
    )
    .unwrap()
}

#[test]
fn a_sequence_that_cannot_fit_the_pool_is_refused_and_one_that_fits_never_loops() {
    let model = tiny();
    // 64 positions of an unshared 8-layer sequence; chunks of 16 made re-prefill fit each time.
    let e = engine(
        &model,
        EngineConfig {
            kv_cache: KvCacheSize::Tokens(64),
            max_batch_tokens: 16,
            prefix_cache: false,
            ..Default::default()
        },
    );
    let err = invalid(e.validate(request(prompt(20, 1), 8, 0.0, 100)));
    assert_eq!(err.param, "max_tokens");
    assert!(err.message.contains("KV cache"), "{err}");
    // Sharing half the layers keeps no K there: the same pool holds 85 positions of it.
    assert!(e.validate(request(prompt(20, 1), 8, 0.5, 60)).is_ok());
    let rx = submit(&e, request(prompt(20, 1), 8, 0.0, 44));
    let out = collect_within(rx, 1, Duration::from_secs(20)).expect("the request never ended");
    assert_eq!(out.error, None);
    assert_eq!(out.tokens[0].len(), 44);
    wait_idle(&e);
    assert_eq!(e.snapshot().preemptions, 0, "{:?}", e.snapshot());
}

#[test]
fn a_failing_request_fails_alone_and_leaves_no_orphan() {
    let model = tiny();
    let config = EngineConfig {
        max_batch_tokens: 16,
        max_batch_size: 2,
        prefix_cache: false,
        ..Default::default()
    };
    let e = failing_engine(&model, config);
    // A long prefill keeps `long` in the batch while the bad request is admitted next to it.
    let long_request = request(prompt(300, 2), 8, 0.0, 8);
    let long = submit(&e, long_request.clone());
    let mut bad_request = request(prompt(10, 3), 8, 0.0, 8);
    bad_request.prompt[4] = POISON;
    bad_request.params.n = 2;
    let bad = submit(&e, bad_request);
    let good = collect_within(long, 1, Duration::from_secs(30)).expect("long request hung");
    assert!(
        good.error.is_none(),
        "a batch-mate's error failed it: {good:?}"
    );
    assert_eq!(good.tokens, alone(&model, long_request).tokens);
    let out = collect_within(bad, 2, Duration::from_secs(30)).expect("bad request hung");
    assert!(out.error.unwrap().contains("poisoned"));
    wait_idle(&e);
    let s = e.snapshot();
    assert_eq!((s.kv_blocks_used, s.waiting), (0, 0), "{s:?}");
}

#[test]
fn a_failed_n2_request_leaves_the_waiting_counter_at_zero() {
    let model = tiny();
    let config = EngineConfig {
        kv_cache: KvCacheSize::Tokens(64),
        max_batch_size: 2,
        max_waiting: 1,
        prefix_cache: false,
        ..Default::default()
    };
    let e = failing_engine(&model, config);
    // Choice 0 takes 48 of the 64 blocks, so choice 1 is never admitted; choice 0 then fails.
    let mut req = request(prompt(40, 4), 8, 0.0, 20);
    req.prompt[30] = POISON;
    req.params.n = 2;
    let out = collect_within(submit(&e, req), 2, Duration::from_secs(20)).expect("request hung");
    assert!(out.error.is_some(), "{out:?}");
    wait_idle(&e);
    assert_eq!(e.snapshot().waiting, 0, "a slot of the 429 counter leaked");
    let next = submit(&e, request(prompt(8, 5), 8, 0.0, 4));
    assert!(collect_within(next, 1, Duration::from_secs(20))
        .unwrap()
        .error
        .is_none());
}

#[test]
fn pool_pressure_preempts_rarely_and_every_request_finishes_in_time() {
    let model = tiny();
    // 12 requests of up to ~250 prompt tokens and n up to 3 against room for 512 positions.
    let e = engine(
        &model,
        EngineConfig {
            kv_cache: KvCacheSize::Tokens(512),
            max_batch_tokens: 64,
            prefix_cache: false,
            ..Default::default()
        },
    );
    let started = Instant::now();
    let mut pending = Vec::new();
    let mut sequences = 0;
    for i in 0..12u32 {
        let mut req = request(prompt(40 + 19 * i as usize, 10 + i), 8, 0.0, 48);
        req.params.n = 1 + (i as usize % 3);
        sequences += req.params.n;
        let n = req.params.n;
        pending.push((submit(&e, req), n));
    }
    for (rx, n) in pending {
        let out = collect_within(rx, n, Duration::from_secs(60)).expect("a request hung");
        assert!(out.error.is_none(), "{out:?}");
    }
    let s = e.snapshot();
    eprintln!(
        "{sequences} sequences, {} preemptions, {:?}",
        s.preemptions,
        started.elapsed()
    );
    assert!(
        s.preemptions as usize <= sequences / 2,
        "preemption thrash: {} preemptions for {sequences} sequences",
        s.preemptions
    );
}
