//! The engine thread: scheduling, the batched forward, sampling and streaming.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use epas_model::paged::{BlockPool, PagedSequence, PrefixCache};
use epas_model::sampler::Sampler;
use epas_model::{EpasLlama, IncrementalDecoder, KvCache, Logits, SequenceStep, TextTokenizer};
use tokio::sync::mpsc::UnboundedSender;

use super::config::EngineConfig;
use super::observer::{EngineObserver, StepPhase};
use super::request::{EngineEvent, FinishReason, TokenLogprobs, Usage};
use super::sequence::Sequence;
use super::state::EngineState;
use super::stop::StopMatcher;
use super::Submission;

/// The choices of one request still generating, and their shared output channel.
struct Group {
    events: UnboundedSender<EngineEvent>,
    remaining: usize,
    usage: Usage,
}

/// Work for one sequence in a step.
struct Scheduled {
    seq: usize,
    tokens: Range<usize>,
    sample: bool,
}

pub(crate) struct Worker {
    model: Arc<EpasLlama>,
    tokenizer: Arc<TextTokenizer>,
    config: EngineConfig,
    rx: Receiver<Submission>,
    state: Arc<EngineState>,
    observer: Arc<dyn EngineObserver>,
    pool: BlockPool,
    prefix: Option<PrefixCache>,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    groups: HashMap<u64, Group>,
}

impl Worker {
    pub fn new(
        model: Arc<EpasLlama>,
        tokenizer: Arc<TextTokenizer>,
        config: EngineConfig,
        rx: Receiver<Submission>,
        state: Arc<EngineState>,
        observer: Arc<dyn EngineObserver>,
    ) -> epas_model::Result<Self> {
        let (layers, width) = (model.config().num_layers, model.config().kv_dim());
        let blocks = config.kv_blocks(layers, width);
        if blocks == 0 {
            return Err(epas_model::ModelError::Config(
                "the KV cache holds no block".into(),
            ));
        }
        // Host blocks, or one arena on the model's device when it runs the tensor forward.
        let pool = model.block_pool(blocks, config.block_size, config.kv_dtype)?;
        state.kv_blocks_total.store(blocks, Ordering::Relaxed);
        let prefix = config
            .prefix_cache
            .then(|| PrefixCache::new(config.block_size));
        Ok(Self {
            model,
            tokenizer,
            config,
            rx,
            state,
            observer,
            pool,
            prefix,
            waiting: VecDeque::new(),
            running: Vec::new(),
            groups: HashMap::new(),
        })
    }

    pub fn run(mut self) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                match self.rx.recv() {
                    Ok(sub) => self.accept(sub),
                    Err(_) => break,
                }
            }
            loop {
                match self.rx.try_recv() {
                    Ok(sub) => self.accept(sub),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if self.idle() => {
                        self.state.stopped.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            self.drop_cancelled();
            let batch = self.schedule();
            if !batch.is_empty() {
                self.step(batch);
            }
            self.publish();
        }
        self.state.stopped.store(true, Ordering::SeqCst);
    }

    fn idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    fn accept(&mut self, sub: Submission) {
        let params = Arc::new(sub.request.params);
        for index in 0..params.n {
            let mut sampling = params.sampling.clone();
            sampling.seed = sampling.seed.wrapping_add(index as u64);
            let prompt = &sub.request.prompt;
            self.waiting.push_back(Sequence {
                request_id: sub.id,
                index,
                plan: sub.request.plan,
                params: params.clone(),
                tokens: prompt.clone(),
                prompt_len: prompt.len(),
                cache: None,
                sampler: Sampler::with_prompt(sampling, prompt),
                decoder: IncrementalDecoder::new(),
                stop: StopMatcher::new(params.stop.clone()),
                arrival: sub.arrival,
                first_token_at: None,
                last_token_at: None,
                cached_tokens: 0,
                admitted: false,
            });
        }
        self.groups.insert(
            sub.id,
            Group {
                events: sub.events,
                remaining: params.n,
                usage: Usage {
                    prompt_tokens: sub.request.prompt.len(),
                    ..Usage::default()
                },
            },
        );
    }

    /// Removes every sequence whose consumer has gone away; their blocks return to the pool.
    fn drop_cancelled(&mut self) {
        let closed: Vec<u64> = self
            .groups
            .iter()
            .filter(|(_, g)| g.events.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in closed {
            self.groups.remove(&id);
            let in_queue = |s: &Sequence| s.request_id == id && !s.admitted;
            if self.waiting.iter().any(in_queue) {
                self.state.waiting.fetch_sub(1, Ordering::SeqCst);
            }
            let ours = |s: &&Sequence| s.request_id == id;
            for s in self
                .waiting
                .iter()
                .filter(ours)
                .chain(self.running.iter().filter(ours))
            {
                self.observer.cancelled(s.ratio());
            }
            self.waiting.retain(|s| s.request_id != id);
            self.running.retain(|s| s.request_id != id);
            self.state.cancellations.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Gets `needed` blocks free, evicting prefix-cache blocks first.
    fn make_room(&mut self, needed: usize) -> bool {
        let free = self.pool.free_blocks();
        if free >= needed {
            return true;
        }
        if let Some(prefix) = self.prefix.as_mut() {
            prefix.evict(needed - free);
        }
        self.pool.free_blocks() >= needed
    }

    /// Ensures sequence `i` of `running` can take `tokens` more positions.
    fn reserve(&mut self, i: usize, tokens: usize) -> bool {
        let needed = self.running[i]
            .cache
            .as_ref()
            .map_or(0, |c| c.blocks_needed(tokens));
        if !self.make_room(needed) {
            return false;
        }
        match self.running[i].cache.as_mut() {
            Some(c) => c.reserve(tokens).is_ok(),
            None => false,
        }
    }

    /// Frees the youngest running sequence's cache and puts it first in the queue.
    fn preempt_last(&mut self) {
        if let Some(mut seq) = self.running.pop() {
            seq.cache = None;
            self.state.preemptions.fetch_add(1, Ordering::Relaxed);
            self.observer.preempted();
            self.waiting.push_front(seq);
        }
    }

    fn schedule(&mut self) -> Vec<Scheduled> {
        let mut budget = self.config.max_batch_tokens;
        let mut batch = Vec::new();
        let mut i = 0;
        while i < self.running.len() && budget > 0 && batch.len() < self.config.max_batch_size {
            let chunk = self.running[i].pending().min(budget);
            if self.reserve(i, chunk) {
                batch.push(self.scheduled(i, chunk));
                budget -= chunk;
                i += 1;
                continue;
            }
            // Out of blocks: preempt from the back; `i` itself goes when it is the youngest.
            self.preempt_last();
        }
        while budget > 0 && self.running.len() < self.config.max_batch_size {
            let Some(mut seq) = self.waiting.pop_front() else {
                break;
            };
            if seq.cache.is_none() {
                self.attach_cache(&mut seq);
            }
            let chunk = seq.pending().min(budget);
            let needed = seq.cache.as_ref().map_or(0, |c| c.blocks_needed(chunk));
            if !self.make_room(needed) {
                if self.running.is_empty() && needed > self.pool.stats().total {
                    self.fail(
                        seq,
                        "the sequence needs more KV cache blocks than the whole pool holds",
                    );
                    continue;
                }
                seq.cache = None;
                seq.cached_tokens = 0;
                self.waiting.push_front(seq);
                break;
            }
            if !seq.admitted {
                seq.admitted = true;
                let last_choice = !self
                    .waiting
                    .iter()
                    .any(|s| s.request_id == seq.request_id && !s.admitted);
                if last_choice {
                    self.state.waiting.fetch_sub(1, Ordering::SeqCst);
                }
                self.observer.admitted(seq.ratio(), seq.arrival.elapsed());
                if let Some(g) = self.groups.get_mut(&seq.request_id) {
                    if seq.index == 0 {
                        g.usage.cached_tokens = seq.cached_tokens;
                    }
                }
            }
            if let Some(c) = seq.cache.as_mut() {
                if c.reserve(chunk).is_err() {
                    seq.cache = None;
                    self.waiting.push_front(seq);
                    break;
                }
            }
            self.running.push(seq);
            let i = self.running.len() - 1;
            batch.push(self.scheduled(i, chunk));
            budget -= chunk;
        }
        batch
    }

    fn scheduled(&self, i: usize, chunk: usize) -> Scheduled {
        let seq = &self.running[i];
        let start = seq.computed();
        Scheduled {
            seq: i,
            tokens: start..start + chunk,
            sample: start + chunk == seq.tokens.len(),
        }
    }

    fn attach_cache(&mut self, seq: &mut Sequence) {
        let prefix = match self.prefix.as_mut() {
            // After preemption the tokens include generated ones; any cached prefix helps.
            Some(p) => p.lookup(&seq.plan, &seq.tokens),
            None => Vec::new(),
        };
        seq.cached_tokens = prefix.len() * self.config.block_size;
        seq.cache = Some(PagedSequence::with_prefix(
            self.pool.clone(),
            seq.plan,
            &prefix,
        ));
    }

    fn fail(&mut self, seq: Sequence, message: &str) {
        if let Some(g) = self.groups.remove(&seq.request_id) {
            let _ = g.events.send(EngineEvent::Error {
                message: message.to_string(),
            });
        }
        if !seq.admitted {
            self.state.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        self.waiting.retain(|s| s.request_id != seq.request_id);
        self.running.retain(|s| s.request_id != seq.request_id);
    }

    fn step(&mut self, batch: Vec<Scheduled>) {
        let started = Instant::now();
        let mut work: Vec<Option<(Range<usize>, bool)>> = vec![None; self.running.len()];
        for s in &batch {
            work[s.seq] = Some((s.tokens.clone(), s.sample));
        }
        let (mut prefill_tokens, mut decode_rows) = (0usize, 0usize);
        let mut steps: Vec<SequenceStep<'_>> = Vec::with_capacity(batch.len());
        for (seq, w) in self.running.iter_mut().zip(&work) {
            let Some((range, sample)) = w else { continue };
            let Sequence { tokens, cache, .. } = seq;
            let Some(cache) = cache.as_mut() else {
                continue;
            };
            if range.len() == 1 && range.start >= seq.prompt_len {
                decode_rows += 1;
            } else {
                prefill_tokens += range.len();
            }
            steps.push(SequenceStep {
                tokens: &tokens[range.clone()],
                cache,
                logits: if *sample { Logits::Last } else { Logits::Skip },
            });
        }
        let result = self.model.forward(&mut steps);
        drop(steps);
        let phase = match (prefill_tokens > 0, decode_rows > 0) {
            (true, true) => StepPhase::Mixed,
            (true, false) => StepPhase::Prefill,
            _ => StepPhase::Decode,
        };
        let outputs = match result {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "engine step failed");
                let ids: Vec<u64> = batch
                    .iter()
                    .map(|s| self.running[s.seq].request_id)
                    .collect();
                for id in ids {
                    if let Some(g) = self.groups.remove(&id) {
                        let _ = g.events.send(EngineEvent::Error {
                            message: e.to_string(),
                        });
                    }
                    self.running.retain(|s| s.request_id != id);
                }
                return;
            }
        };
        let mut outputs = outputs.into_iter();
        let mut finished: Vec<(usize, FinishReason)> = Vec::new();
        for (i, w) in work.iter().enumerate() {
            let Some((range, sample)) = w else { continue };
            let logits = outputs.next().flatten();
            let ratio = self.running[i].ratio();
            if range.start < self.running[i].prompt_len {
                let end = range.end.min(self.running[i].prompt_len);
                self.observer.prompt_processed(ratio, end - range.start);
            }
            if !sample {
                continue;
            }
            let Some(logits) = logits.and_then(|l| l.squeeze(0).ok()?.to_vec1::<f32>().ok()) else {
                continue;
            };
            if let Some(reason) = self.sample(i, &logits) {
                finished.push((i, reason));
            }
        }
        self.state.steps.fetch_add(1, Ordering::Relaxed);
        self.observer.step(
            phase,
            batch.len(),
            prefill_tokens + decode_rows,
            started.elapsed(),
        );
        for &(i, reason) in finished.iter().rev() {
            let seq = self.running.remove(i);
            self.finish(seq, reason);
        }
    }

    /// Samples the next token of running sequence `i`; returns why it finished, if it did.
    fn sample(&mut self, i: usize, logits: &[f32]) -> Option<FinishReason> {
        let max_context = self.model.max_context();
        let tokenizer = self.tokenizer.clone();
        let seq = &mut self.running[i];
        let params = seq.params.clone();
        let mut banned: Vec<u32> = Vec::new();
        if seq.generated() < params.min_tokens {
            if !params.ignore_eos {
                banned.extend(&tokenizer.eos_tokens);
            }
            banned.extend(&params.stop_token_ids);
        }
        let sampled = seq.sampler.sample_full(logits, &banned);
        let now = Instant::now();
        let ratio = seq.ratio();
        match seq.last_token_at {
            None => self.observer.first_token(ratio, now - seq.arrival),
            Some(prev) => self.observer.inter_token(ratio, now - prev),
        }
        seq.first_token_at.get_or_insert(now);
        seq.last_token_at = Some(now);
        self.observer.generated(ratio, 1);
        let token = sampled.token;
        seq.tokens.push(token);
        let group = self.groups.get_mut(&seq.request_id)?;
        group.usage.completion_tokens += 1;
        let is_eos = !params.ignore_eos && tokenizer.is_eos(token);
        if is_eos || params.stop_token_ids.contains(&token) {
            return Some(FinishReason::Stop);
        }
        let text = seq.decoder.push(&tokenizer, token).unwrap_or_default();
        let check = seq.stop.push(&text);
        let logprobs = sampled.logprob.map(|logprob| TokenLogprobs {
            logprob,
            top: sampled.top_logprobs.clone(),
        });
        let _ = group.events.send(EngineEvent::Token {
            index: seq.index,
            token,
            text: check.emit,
            logprobs,
        });
        if check.stopped {
            // Nothing after a stop string is emitted, not even text held back.
            seq.stop = StopMatcher::default();
            seq.decoder = IncrementalDecoder::new();
            return Some(FinishReason::Stop);
        }
        if seq.generated() >= params.max_tokens || seq.tokens.len() >= max_context {
            return Some(FinishReason::Length);
        }
        None
    }

    fn finish(&mut self, mut seq: Sequence, reason: FinishReason) {
        let tail = seq.decoder.flush(&self.tokenizer).unwrap_or_default();
        let check = seq.stop.push(&tail);
        let mut text = check.emit;
        if !check.stopped {
            text.push_str(&seq.stop.flush());
        }
        self.observer
            .finished(seq.ratio(), reason, seq.arrival.elapsed());
        if let (Some(prefix), Some(cache)) = (self.prefix.as_mut(), seq.cache.as_ref()) {
            let cached = &seq.tokens[..cache.len()];
            prefix.insert(&seq.plan, cached, cache.full_blocks());
        }
        let Some(group) = self.groups.get_mut(&seq.request_id) else {
            return;
        };
        let _ = group.events.send(EngineEvent::Finished {
            index: seq.index,
            reason,
            text,
        });
        group.remaining -= 1;
        if group.remaining == 0 {
            if let Some(g) = self.groups.remove(&seq.request_id) {
                let _ = g.events.send(EngineEvent::Done { usage: g.usage });
            }
        }
    }

    /// Publishes gauges; the running count goes last, so a reader that sees it drop to 0
    /// also sees the blocks already returned.
    fn publish(&self) {
        let s = &self.state;
        let stats = self.pool.stats();
        let cached = self.prefix.as_ref().map_or(0, |p| p.stats().cached_blocks);
        s.kv_blocks_used
            .store(stats.used().saturating_sub(cached), Ordering::SeqCst);
        s.kv_blocks_cached.store(cached, Ordering::SeqCst);
        if let Some(p) = &self.prefix {
            let ps = p.stats();
            s.prefix_hits.store(ps.hits, Ordering::Relaxed);
            s.prefix_misses.store(ps.misses, Ordering::Relaxed);
        }
        s.running.store(self.running.len(), Ordering::SeqCst);
    }
}
