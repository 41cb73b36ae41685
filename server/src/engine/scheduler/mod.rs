//! The scheduler: which sequences run in the next step, with which tokens, and what their
//! outputs mean. It owns the requests (keyed by id), their sequences and the KV blocks, and runs
//! no model: [`Scheduler::schedule`] makes a [`StepPlan`], the executor runs it, and
//! [`Scheduler::update`] applies the [`RowOutput`]s. Stream events collect in an outbox.
//!
//! Policy. Sequences are served oldest first (request id, then choice). Every running sequence
//! is older than every waiting one, and the oldest running one always gets its blocks, by
//! preempting the youngest, so the engine always makes progress; validation guarantees that any
//! one sequence fits the pool alone. A waiting sequence is admitted only when the blocks for its
//! whole prompt fit next to what the running sequences still need (their remaining prefill and
//! one more block each), and never in a step that preempted, so a preempted sequence is not
//! re-admitted only to be preempted again. While any sequence decodes, the prompt tokens of a
//! step (chunks of running prefills and of admissions) stay within `max_prefill_while_decoding`,
//! so that arriving prompts stretch the decoding streams' inter-token gaps by a bounded amount.

mod kv_space;
mod output;
mod plan;
mod sequence;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use epas_model::{BlockPool, PagedSequence, PrefixCache, Sampler};
use epas_model::{IncrementalDecoder, KvCache, Logits, TextTokenizer};
use llguidance::Matcher;

pub(crate) use kv_space::KvSpace;
pub(crate) use plan::{BatchRow, RowInput, RowOutput, RowSampling, ScheduledRow, StepPlan};
pub(crate) use sequence::SeqId;
use sequence::{Running, Sequence};

use super::config::EngineConfig;
use super::observer::EngineObserver;
use super::request::{EngineEvent, Failure, FinishReason, Usage};
use super::speculative::{ngram, DraftRecord};
use super::stop::StopMatcher;
use super::validate::ValidRequest;

/// An event for the stream of request `request`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Emitted {
    pub request: u64,
    pub event: EngineEvent,
}

/// Why a request is removed before it finished.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Abort {
    /// Its consumer went away; nothing is sent.
    Cancelled,
    /// It cannot go on; its stream ends with this error.
    Failed(Failure),
}

/// What the scheduler keeps per request besides its sequences.
struct RequestRecord {
    /// Choices not finished yet.
    remaining: usize,
    /// Choices never admitted: the request counts as waiting while any is.
    unadmitted: usize,
    usage: Usage,
}

/// Counts since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SchedulerCounts {
    pub steps: u64,
    pub preemptions: u64,
    pub cancellations: u64,
    pub prefix_hits: u64,
    pub prefix_misses: u64,
    /// Draft tokens checked, and those kept.
    pub drafted: u64,
    pub draft_accepted: u64,
}

pub(crate) struct Scheduler {
    config: EngineConfig,
    kv: KvSpace,
    tokenizer: Arc<TextTokenizer>,
    observer: Arc<dyn EngineObserver>,
    requests: HashMap<u64, RequestRecord>,
    /// Oldest first.
    waiting: VecDeque<Sequence>,
    /// Oldest first; all older than any waiting sequence.
    running: Vec<Running>,
    outbox: Vec<Emitted>,
    counts: SchedulerCounts,
}

impl Scheduler {
    pub fn new(
        config: EngineConfig,
        pool: BlockPool,
        tokenizer: Arc<TextTokenizer>,
        observer: Arc<dyn EngineObserver>,
    ) -> Self {
        let prefix = config
            .prefix_cache
            .then(|| PrefixCache::new(config.block_size));
        Self {
            config,
            kv: KvSpace::new(pool, prefix),
            tokenizer,
            observer,
            requests: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            outbox: Vec::new(),
            counts: SchedulerCounts::default(),
        }
    }

    /// Queues request `id` behind every request already here.
    pub fn add(&mut self, id: u64, request: ValidRequest, arrival: Instant) {
        let (request, mut matcher) = request.into_parts();
        let params = Arc::new(request.params);
        for index in 0..params.n {
            let mut sampling = params.sampling.clone();
            sampling.seed = sampling.seed.wrapping_add(index as u64);
            self.waiting.push_back(Sequence {
                id: SeqId { request: id, index },
                plan: request.plan,
                params: params.clone(),
                tokens: request.prompt.clone(),
                prompt_len: request.prompt.len(),
                sampler: Sampler::with_prompt(sampling, &request.prompt),
                decoder: IncrementalDecoder::new(),
                stop: StopMatcher::new(params.stop.clone()),
                arrival,
                last_token_at: None,
                admitted_once: false,
                drafts: DraftRecord::default(),
                // Each choice walks the constraint on its own; the last takes the original.
                constraint: if index + 1 == params.n {
                    matcher.take()
                } else {
                    matcher.as_ref().map(Matcher::deep_clone)
                },
            });
        }
        self.requests.insert(
            id,
            RequestRecord {
                remaining: params.n,
                unadmitted: params.n,
                usage: Usage {
                    prompt_tokens: request.prompt.len(),
                    ..Usage::default()
                },
            },
        );
    }

    pub fn is_idle(&self) -> bool {
        self.requests.is_empty()
    }

    /// Requests with a choice never admitted (what the queue limit counts).
    pub fn queued_requests(&self) -> usize {
        self.requests.values().filter(|r| r.unadmitted > 0).count()
    }

    /// Requests not ended yet.
    pub fn active_requests(&self) -> usize {
        self.requests.len()
    }

    pub fn running_sequences(&self) -> usize {
        self.running.len()
    }

    pub fn kv(&self) -> &KvSpace {
        &self.kv
    }

    pub fn counts(&self) -> SchedulerCounts {
        self.counts
    }

    pub fn take_events(&mut self) -> Vec<Emitted> {
        std::mem::take(&mut self.outbox)
    }

    /// Decides the next step: running sequences first (oldest first, preempting the youngest
    /// when blocks run out), then admissions within the token budget. While any sequence
    /// decodes, prompt chunks (of running and admitted sequences alike) share the smaller
    /// prefill budget, so a decode row always finds room and its step stays short.
    pub fn schedule(&mut self) -> StepPlan {
        let mut plan = StepPlan::default();
        let mut budget = self.config.max_batch_tokens;
        let mut prefill_budget = if self.running.iter().any(Running::is_decoding) {
            self.config.max_prefill_while_decoding.min(budget)
        } else {
            budget
        };
        let mut preempted = false;
        let mut slot = 0;
        while slot < self.running.len() && budget > 0 {
            let decoding = self.running[slot].is_decoding();
            let chunk = if decoding {
                1
            } else {
                self.running[slot].pending().min(budget).min(prefill_budget)
            };
            if chunk == 0 {
                // Its prompt waits for a step with prefill budget left; it keeps its blocks.
                slot += 1;
                continue;
            }
            let prefill = if decoding { 0 } else { chunk };
            let draft = self.draft(slot, chunk, budget);
            if !draft.is_empty() && self.grow_into_free(slot, chunk + draft.len()) {
                budget -= chunk + draft.len();
                plan.rows.push(self.row(slot, chunk, draft));
                slot += 1;
            } else if self.grow(slot, chunk) {
                plan.rows.push(self.row(slot, chunk, Vec::new()));
                budget -= chunk;
                prefill_budget -= prefill;
                slot += 1;
            } else if slot > 0 || self.running.len() > 1 {
                // The youngest gives its blocks back; when that is `slot` itself, it waits.
                self.preempt_youngest();
                preempted = true;
            } else {
                // Alone with the whole pool and still no room: waiting cannot help.
                let id = self.running[0].seq.id.request;
                self.abort(
                    id,
                    Abort::Failed(Failure::engine(
                        "the KV cache cannot hold this sequence (raise --kv-cache-tokens)",
                    )),
                );
            }
        }
        if !preempted {
            self.admit(&mut plan, budget.min(prefill_budget));
        }
        plan
    }

    /// Reserves room in sequence `slot`'s cache for `tokens` more positions.
    fn grow(&mut self, slot: usize, tokens: usize) -> bool {
        let needed = self.running[slot].cache.blocks_needed(tokens);
        self.kv.make_room(needed) && self.running[slot].cache.reserve(tokens).is_ok()
    }

    /// Reserves room for `tokens` more positions only from free blocks that the sequences
    /// after `slot` do not need for their own next tokens (drafts never evict, preempt, or
    /// leave a later sequence without room).
    fn grow_into_free(&mut self, slot: usize, tokens: usize) -> bool {
        let later: usize = self.running[slot + 1..]
            .iter()
            .map(|r| r.cache.blocks_needed(r.pending()))
            .sum();
        let cache = &mut self.running[slot].cache;
        cache.blocks_needed(tokens) + later <= self.kv.free_blocks()
            && cache.reserve(tokens).is_ok()
    }

    /// Tokens to draft for sequence `slot` running `chunk` tokens this step: a decode step of a
    /// request that allows it, while the batch is small and the sequence's drafts pay.
    fn draft(&mut self, slot: usize, chunk: usize, budget: usize) -> Vec<u32> {
        let Some(cfg) = self.config.speculative else {
            return Vec::new();
        };
        let running = self.running.len();
        // Only a row that runs its last sampled token may carry drafts: one whose chunk the
        // prefill budget cut to a single prompt token must not.
        let decoding = self.running[slot].is_decoding() && chunk == 1;
        let seq = &mut self.running[slot].seq;
        let params = &seq.params;
        // Tokens the step may add besides the model's own: never past max_tokens.
        let room = params.max_tokens.saturating_sub(seq.generated() + 1);
        let k = cfg.num_tokens.min(room).min(budget - chunk);
        let allowed = decoding
            && k > 0
            && params.speculative
            && seq.constraint.is_none()
            && running <= cfg.max_batch
            && seq.generated() >= params.min_tokens;
        if !(allowed && seq.drafts.may_draft()) {
            return Vec::new();
        }
        ngram::propose(&seq.tokens, cfg.ngram_min, cfg.ngram_max, k)
    }

    fn row(&self, slot: usize, chunk: usize, draft: Vec<u32>) -> ScheduledRow {
        let r = &self.running[slot];
        let start = r.cache.len();
        let sample = start + chunk == r.seq.tokens.len();
        let input = if draft.is_empty() {
            Vec::new()
        } else {
            let mut input = r.seq.tokens[start..start + chunk].to_vec();
            input.extend_from_slice(&draft);
            input
        };
        ScheduledRow {
            seq: r.seq.id,
            slot,
            tokens: start..start + chunk,
            sample,
            banned: if sample {
                r.seq.banned_tokens(&self.tokenizer.eos_tokens)
            } else {
                Vec::new()
            },
            prefill: !r.is_decoding(),
            draft,
            input,
        }
    }

    fn preempt_youngest(&mut self) {
        if let Some(r) = self.running.pop() {
            // Dropping the cache returns its blocks; the tokens are recomputed on re-admission.
            self.waiting.push_front(r.seq);
            self.counts.preemptions += 1;
            self.observer.preempted();
        }
    }

    /// Blocks the running sequences may still take before the next admission is safe: the rest
    /// of their prefill and one more block of positions each.
    fn running_reserve(&self) -> usize {
        let block = self.kv.block_size();
        self.running
            .iter()
            .map(|r| r.cache.blocks_needed(r.pending() + block))
            .sum()
    }

    fn admit(&mut self, plan: &mut StepPlan, mut budget: usize) {
        while budget > 0 && self.running.len() < self.config.max_batch_size {
            let Some(seq) = self.waiting.front() else {
                break;
            };
            let (plan_of, bs) = (seq.plan, self.kv.block_size());
            let prefix = self.kv.lookup(&plan_of, &seq.tokens);
            let cached_positions = prefix.len() * bs;
            let needed = PagedSequence::blocks_for(&plan_of, seq.tokens.len(), bs)
                - PagedSequence::blocks_for(&plan_of, cached_positions, bs);
            let available = self.kv.available();
            if needed + self.running_reserve() > available {
                if self.running.is_empty() && needed > available {
                    // Validation keeps every sequence within the pool; never wait forever.
                    let id = seq.id.request;
                    drop(prefix);
                    self.abort(
                        id,
                        Abort::Failed(Failure::engine("the KV cache cannot hold this sequence")),
                    );
                    continue;
                }
                break;
            }
            let Some(seq) = self.waiting.pop_front() else {
                break;
            };
            let mut cache = PagedSequence::with_prefix(self.kv.pool().clone(), seq.plan, &prefix);
            drop(prefix);
            let chunk = (seq.tokens.len() - cache.len()).min(budget);
            if !(self.kv.make_room(cache.blocks_needed(chunk)) && cache.reserve(chunk).is_ok()) {
                self.waiting.push_front(seq);
                break;
            }
            let first_admission = !seq.admitted_once;
            let mut running = Running { seq, cache };
            if first_admission {
                self.first_admission(&mut running, cached_positions);
            }
            self.running.push(running);
            let slot = self.running.len() - 1;
            plan.rows.push(self.row(slot, chunk, Vec::new()));
            budget -= chunk;
        }
    }

    fn first_admission(&mut self, r: &mut Running, cached_positions: usize) {
        let seq = &mut r.seq;
        seq.admitted_once = true;
        self.observer.admitted(seq.ratio(), seq.arrival.elapsed());
        if self.kv.prefix_enabled() {
            self.observer
                .prefix_looked_up(seq.ratio(), seq.prompt_len, cached_positions);
            if cached_positions > 0 {
                self.counts.prefix_hits += 1;
            } else {
                self.counts.prefix_misses += 1;
            }
        }
        if let Some(record) = self.requests.get_mut(&seq.id.request) {
            record.unadmitted -= 1;
            if seq.id.index == 0 {
                record.usage.cached_tokens = cached_positions;
            }
        }
    }

    /// Each scheduled row's tokens, cache and sampler, for the executor.
    pub fn batch<'a>(&'a mut self, plan: &'a StepPlan) -> Vec<BatchRow<'a>> {
        let mut rows = plan.rows.iter().peekable();
        let mut batch = Vec::with_capacity(plan.rows.len());
        for (slot, r) in self.running.iter_mut().enumerate() {
            let Some(row) = rows.next_if(|row| row.slot == slot) else {
                continue;
            };
            debug_assert_eq!(row.seq, r.seq.id);
            let Running { seq, cache } = r;
            let tokens = if row.draft.is_empty() {
                &seq.tokens[row.tokens.clone()]
            } else {
                row.input.as_slice()
            };
            batch.push(BatchRow {
                input: RowInput {
                    tokens,
                    cache,
                    draft: &row.draft,
                    logits: match (row.sample, row.draft.is_empty()) {
                        (false, _) => Logits::Skip,
                        (true, true) => Logits::Last,
                        (true, false) => Logits::All,
                    },
                },
                sample: row.sample.then_some(RowSampling {
                    sampler: &mut seq.sampler,
                    banned: &row.banned,
                    constraint: seq.constraint.as_mut(),
                }),
            });
        }
        batch
    }

    /// Applies the outputs of `plan`'s rows (in order): sampled tokens become events, finished
    /// choices leave, and a request with a failed row ends with an error.
    pub fn update(&mut self, plan: StepPlan, outputs: Vec<RowOutput>) {
        let now = Instant::now();
        let mut finished = Vec::new();
        let mut failed = Vec::new();
        for (row, output) in plan.rows.iter().zip(outputs) {
            let r = &self.running[row.slot];
            let prompt_len = r.seq.prompt_len;
            if row.tokens.start < prompt_len && !matches!(output, RowOutput::Failed(_)) {
                let end = row.tokens.end.min(prompt_len);
                self.observer
                    .prompt_processed(r.seq.ratio(), end - row.tokens.start);
            }
            match output {
                RowOutput::Computed => {}
                RowOutput::Failed(failure) => failed.push((row.seq.request, failure)),
                RowOutput::Sampled(sampled) => {
                    if let Some(reason) = self.accept(row.slot, sampled, now) {
                        finished.push((row.slot, reason));
                    }
                }
                RowOutput::Speculated {
                    tokens,
                    drafted,
                    accepted,
                } => {
                    let r = &mut self.running[row.slot];
                    r.seq.drafts.record(drafted, accepted);
                    self.counts.drafted += drafted as u64;
                    self.counts.draft_accepted += accepted as u64;
                    self.observer.speculated(r.seq.ratio(), drafted, accepted);
                    let mut reason = None;
                    for sampled in tokens {
                        reason = self.accept(row.slot, sampled, now);
                        if reason.is_some() {
                            break;
                        }
                    }
                    // The positions of rejected drafts leave the cache (and their blocks).
                    let r = &mut self.running[row.slot];
                    r.cache.truncate(r.seq.tokens.len() - 1);
                    if let Some(reason) = reason {
                        finished.push((row.slot, reason));
                    }
                }
            }
        }
        for (slot, reason) in finished.into_iter().rev() {
            let r = self.running.remove(slot);
            self.finish(r, reason);
        }
        for (id, failure) in failed {
            self.abort(id, Abort::Failed(failure));
        }
        self.counts.steps += 1;
    }

    fn accept(
        &mut self,
        slot: usize,
        sampled: epas_model::Sampled,
        now: Instant,
    ) -> Option<FinishReason> {
        let seq = &mut self.running[slot].seq;
        let ratio = seq.ratio();
        match seq.last_token_at.replace(now) {
            None => self.observer.first_token(ratio, now - seq.arrival),
            Some(previous) => self.observer.inter_token(ratio, now - previous),
        }
        self.observer.generated(ratio, 1);
        let Some(record) = self.requests.get_mut(&seq.id.request) else {
            // Unreachable (a request leaves with all its sequences); never keep an orphan.
            return Some(FinishReason::Stop);
        };
        record.usage.completion_tokens += 1;
        let max_tokens = seq.params.max_tokens;
        let outcome = output::accept_token(seq, sampled, &self.tokenizer, max_tokens);
        if let Some(event) = outcome.event {
            self.outbox.push(Emitted {
                request: seq.id.request,
                event,
            });
        }
        // A constraint whose language allows nothing more ends the choice.
        let constraint_done = seq.constraint.as_ref().is_some_and(Matcher::is_stopped);
        outcome
            .finish
            .or(constraint_done.then_some(FinishReason::Stop))
    }

    fn finish(&mut self, mut r: Running, reason: FinishReason) {
        let text = output::final_text(&mut r.seq, &self.tokenizer);
        let seq = &r.seq;
        self.observer
            .finished(seq.ratio(), reason, seq.arrival.elapsed());
        self.kv.remember(&seq.plan, &seq.tokens, &r.cache);
        let id = seq.id.request;
        self.outbox.push(Emitted {
            request: id,
            event: EngineEvent::Finished {
                index: seq.id.index,
                reason,
                text,
                stop_sequence: seq.stop.matched().map(str::to_owned),
            },
        });
        let Some(record) = self.requests.get_mut(&id) else {
            return;
        };
        record.remaining -= 1;
        if record.remaining == 0 {
            let usage = record.usage;
            self.requests.remove(&id);
            self.outbox.push(Emitted {
                request: id,
                event: EngineEvent::Done { usage },
            });
        }
    }

    /// Removes request `id` and every one of its sequences, waiting or running.
    pub fn abort(&mut self, id: u64, reason: Abort) {
        if self.requests.remove(&id).is_none() {
            return;
        }
        let cancelled = reason == Abort::Cancelled;
        let observer = self.observer.clone();
        let drop_if_ours = |seq: &Sequence| {
            let ours = seq.id.request == id;
            if ours && cancelled {
                observer.cancelled(seq.ratio());
            }
            !ours
        };
        self.waiting.retain(|s| drop_if_ours(s));
        self.running.retain(|r| drop_if_ours(&r.seq));
        match reason {
            Abort::Cancelled => self.counts.cancellations += 1,
            Abort::Failed(failure) => self.outbox.push(Emitted {
                request: id,
                event: EngineEvent::Error(failure),
            }),
        }
    }
}
