//! Scheduler tests over a fake model and the built-in model's tokenizer (no download).

mod fake_model;
mod property;
mod scenarios;
mod speculation;
mod structured;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use epas_model::{SharingPlan, TextTokenizer};

use super::{Scheduler, StepPlan};
use crate::engine::executor::Executor;
use crate::engine::structured::ConstraintCompiler;
use crate::engine::validate::Validator;
use crate::engine::{
    EngineConfig, EngineEvent, FinishReason, GenerationParams, GenerationRequest, NoObserver,
    Refusal, RequestLimits, StepModel, Usage,
};
use fake_model::FakeModel;

pub(super) const LAYERS: usize = 4;

fn tokenizer() -> Arc<TextTokenizer> {
    static T: OnceLock<Arc<TextTokenizer>> = OnceLock::new();
    T.get_or_init(|| {
        let (_, t) = epas_builtin::load_builtin(&candle_core::Device::Cpu).unwrap();
        Arc::new(t)
    })
    .clone()
}

/// A scheduler and an executor over the fake model, stepped by hand.
pub(super) struct Harness {
    pub scheduler: Scheduler,
    pub model: Arc<FakeModel>,
    executor: Executor,
    pub validator: Validator,
    next_id: u64,
    /// Every event delivered, per request.
    pub events: HashMap<u64, Vec<EngineEvent>>,
}

/// What one request produced.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Outcome {
    pub tokens: Vec<Vec<u32>>,
    pub finish: Vec<Option<FinishReason>>,
    pub usage: Option<Usage>,
    pub error: Option<String>,
}

impl Harness {
    /// `kv_blocks` blocks of `config.block_size` positions.
    pub fn new(config: EngineConfig, kv_blocks: usize) -> Self {
        Self::with_model(config, kv_blocks, false)
    }

    /// Over a fake model whose text repeats itself (`repetitive`) or not.
    pub fn with_model(config: EngineConfig, kv_blocks: usize, repetitive: bool) -> Self {
        let model = Arc::new(FakeModel {
            layers: LAYERS,
            vocab: tokenizer().inner().get_vocab_size(true),
            context: 256,
            repetitive,
        });
        let pool = model
            .block_pool(kv_blocks, config.block_size, config.kv_dtype)
            .unwrap();
        let limits = RequestLimits {
            num_layers: LAYERS,
            vocab_size: model.vocab,
            max_context: model.context,
            kv_blocks,
            block_size: config.block_size,
            max_n: config.max_batch_size,
        };
        let validator = Validator {
            limits,
            compiler: ConstraintCompiler::new(tokenizer(), model.vocab),
        };
        Self {
            scheduler: Scheduler::new(config, pool, tokenizer(), Arc::new(NoObserver)),
            executor: Executor::new(model.clone(), tokenizer().eos_tokens.clone()),
            model,
            validator,
            next_id: 1,
            events: HashMap::new(),
        }
    }

    pub fn submit(&mut self, request: GenerationRequest) -> Result<u64, Refusal> {
        let valid = self.validator.validate(request)?;
        let id = self.next_id;
        self.next_id += 1;
        self.scheduler.add(id, valid, Instant::now());
        self.events.insert(id, Vec::new());
        Ok(id)
    }

    /// One engine step; returns its plan.
    pub fn step(&mut self) -> StepPlan {
        let plan = self.scheduler.schedule();
        if !plan.is_empty() {
            let outputs = {
                let mut batch = self.scheduler.batch(&plan);
                self.executor.execute(&mut batch)
            };
            self.scheduler.update(plan.clone(), outputs);
        }
        for e in self.scheduler.take_events() {
            let stream = self.events.get_mut(&e.request).expect("a known request");
            assert!(
                !stream
                    .iter()
                    .any(|x| matches!(x, EngineEvent::Done { .. } | EngineEvent::Error(_))),
                "request {} got {:?} after it ended",
                e.request,
                e.event
            );
            stream.push(e.event);
        }
        check_invariants(&self.scheduler);
        plan
    }

    /// Steps until no request is left; panics after `max_steps`.
    pub fn run_until_idle(&mut self, max_steps: usize) -> usize {
        let mut steps = 0;
        while !self.scheduler.is_idle() {
            assert!(steps < max_steps, "no progress after {steps} steps");
            self.step();
            steps += 1;
        }
        steps
    }

    pub fn outcome(&self, id: u64, n: usize) -> Outcome {
        let mut o = Outcome {
            tokens: vec![Vec::new(); n],
            finish: vec![None; n],
            ..Default::default()
        };
        for e in &self.events[&id] {
            match e {
                EngineEvent::Token { index, token, .. } => o.tokens[*index].push(*token),
                EngineEvent::Finished { index, reason, .. } => {
                    assert!(o.finish[*index].is_none(), "choice {index} finished twice");
                    o.finish[*index] = Some(*reason);
                }
                EngineEvent::Done { usage } => o.usage = Some(*usage),
                EngineEvent::Error(failure) => o.error = Some(failure.message.clone()),
            }
        }
        o
    }
}

pub(super) fn request(
    prompt: Vec<u32>,
    ratio: f64,
    max_tokens: usize,
    n: usize,
) -> GenerationRequest {
    GenerationRequest {
        prompt,
        plan: SharingPlan::new(LAYERS, ratio).unwrap(),
        params: GenerationParams {
            max_tokens,
            ignore_eos: true,
            n,
            ..Default::default()
        },
        constraint: None,
    }
}

pub(super) fn prompt(len: usize, salt: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|i| 300 + (i * 131 + salt * 977) % 3000)
        .collect()
}

pub(super) fn config(max_batch_size: usize, max_batch_tokens: usize) -> EngineConfig {
    EngineConfig {
        max_batch_size,
        max_batch_tokens,
        block_size: 4,
        prefix_cache: false,
        ..Default::default()
    }
}

/// What must hold after every step.
pub(super) fn check_invariants(s: &Scheduler) {
    let mut per_request: HashMap<u64, (usize, usize)> = HashMap::new();
    for seq in s.waiting.iter().chain(s.running.iter().map(|r| &r.seq)) {
        let e = per_request.entry(seq.id.request).or_default();
        e.0 += 1;
        if !seq.admitted_once {
            e.1 += 1;
        }
    }
    let ids: HashSet<u64> = s.requests.keys().copied().collect();
    let with_sequences: HashSet<u64> = per_request.keys().copied().collect();
    assert_eq!(
        ids, with_sequences,
        "every request has sequences and every sequence a request"
    );
    for (id, record) in &s.requests {
        let (sequences, unadmitted) = per_request[id];
        assert_eq!(record.remaining, sequences, "request {id}: choices left");
        assert_eq!(
            record.unadmitted, unadmitted,
            "request {id}: choices never admitted"
        );
    }
    let queued = per_request.values().filter(|(_, u)| *u > 0).count();
    assert_eq!(s.queued_requests(), queued, "the waiting counter");
    assert!(s.running.len() <= s.config.max_batch_size);
    for r in &s.running {
        assert!(r.seq.admitted_once);
        assert!(
            r.pending() >= 1,
            "a running sequence always has a token to run"
        );
    }
    let pool = s.kv.pool().stats();
    if !s.kv.prefix_enabled() {
        let held: usize = s.running.iter().map(|r| r.cache.blocks_held()).sum();
        assert_eq!(
            pool.used(),
            held,
            "blocks in use are exactly those running sequences hold"
        );
    } else {
        let held: usize = s.running.iter().map(|r| r.cache.blocks_held()).sum();
        assert!(pool.used() <= held + s.kv.cached_blocks(), "a block leaked");
    }
}

impl Harness {
    /// Greedy output of the fake model for `prompt` alone, `max_tokens` long, per choice.
    pub fn expected(&self, prompt: &[u32], max_tokens: usize, n: usize) -> Vec<Vec<u32>> {
        vec![self.model.continuation(prompt, max_tokens); n]
    }
}
