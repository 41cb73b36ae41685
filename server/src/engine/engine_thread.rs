//! The engine thread: takes submissions, notices consumers that went away, and runs the loop
//! schedule -> execute -> update, delivering each request's events to its channel. It owns the
//! scheduler and the executor; nothing else touches them, so nothing is locked.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::executor::Executor;
use super::observer::EngineObserver;
use super::request::EngineEvent;
use super::scheduler::{Abort, Scheduler};
use super::state::EngineState;
use super::Submission;

pub(crate) struct EngineThread {
    pub scheduler: Scheduler,
    pub executor: Executor,
    pub rx: Receiver<Submission>,
    pub state: Arc<EngineState>,
    pub observer: Arc<dyn EngineObserver>,
    /// Each live request's event channel.
    pub channels: HashMap<u64, UnboundedSender<EngineEvent>>,
}

impl EngineThread {
    /// Runs until every handle is gone and no work is left.
    pub fn run(mut self) {
        loop {
            if self.scheduler.is_idle() {
                match self.rx.recv() {
                    Ok(submission) => self.accept(vec![submission]),
                    Err(_) => return,
                }
            }
            let mut arrived = Vec::new();
            loop {
                match self.rx.try_recv() {
                    Ok(submission) => arrived.push(submission),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if self.scheduler.is_idle() => return,
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            self.accept(arrived);
            self.drop_cancelled();
            self.step();
            self.deliver();
            self.publish();
        }
    }

    fn accept(&mut self, submissions: Vec<Submission>) {
        let count = submissions.len();
        for s in submissions {
            self.channels.insert(s.id, s.events);
            self.scheduler.add(s.id, s.request, s.arrival);
        }
        // Counted as queued before they stop counting as submitted: the queue limit never
        // sees them missing.
        self.state
            .active
            .store(self.scheduler.active_requests(), Ordering::SeqCst);
        self.state
            .queued
            .store(self.scheduler.queued_requests(), Ordering::SeqCst);
        self.state.submitted.fetch_sub(count, Ordering::SeqCst);
    }

    fn drop_cancelled(&mut self) {
        let gone: Vec<u64> = self
            .channels
            .iter()
            .filter(|(_, tx)| tx.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.channels.remove(&id);
            self.scheduler.abort(id, Abort::Cancelled);
        }
    }

    fn step(&mut self) {
        let plan = self.scheduler.schedule();
        if plan.is_empty() {
            return;
        }
        let started = Instant::now();
        let outputs = {
            let mut batch = self.scheduler.batch(&plan);
            self.executor.execute(&mut batch)
        };
        self.observer.step(
            plan.phase(),
            plan.rows.len(),
            plan.tokens(),
            started.elapsed(),
        );
        self.scheduler.update(plan, outputs);
    }

    fn deliver(&mut self) {
        for emitted in self.scheduler.take_events() {
            let last = matches!(
                emitted.event,
                EngineEvent::Done { .. } | EngineEvent::Error(_)
            );
            if let Some(tx) = self.channels.get(&emitted.request) {
                let _ = tx.send(emitted.event);
            }
            if last {
                self.channels.remove(&emitted.request);
            }
        }
    }

    /// Publishes gauges; the running count goes last, so a reader that sees it drop to 0 also
    /// sees the blocks already returned.
    fn publish(&self) {
        let s = &self.state;
        let kv = self.scheduler.kv();
        let cached = kv.cached_blocks();
        let used = kv.total_blocks() - kv.free_blocks();
        s.kv_blocks_used
            .store(used.saturating_sub(cached), Ordering::SeqCst);
        s.kv_blocks_cached.store(cached, Ordering::SeqCst);
        let counts = self.scheduler.counts();
        s.prefix_hits.store(counts.prefix_hits, Ordering::SeqCst);
        s.prefix_misses
            .store(counts.prefix_misses, Ordering::SeqCst);
        s.preemptions.store(counts.preemptions, Ordering::SeqCst);
        s.cancellations
            .store(counts.cancellations, Ordering::SeqCst);
        s.steps.store(counts.steps, Ordering::SeqCst);
        s.queued
            .store(self.scheduler.queued_requests(), Ordering::SeqCst);
        s.running
            .store(self.scheduler.running_sequences(), Ordering::SeqCst);
        s.active
            .store(self.scheduler.active_requests(), Ordering::SeqCst);
    }
}
