//! The serving engine: one thread owns the model and runs steps; callers submit requests
//! through an [`EngineHandle`] and read a stream of [`EngineEvent`]s.
//!
//! Every step drops sequences whose consumer went away, schedules decode rows and prefill
//! chunks of running sequences within a token budget, admits waiting requests while KV blocks
//! allow, runs one forward over the mixed batch (sequences of different sharing ratios
//! together), samples and streams tokens. A full block pool first evicts prefix-cache blocks,
//! then preempts the youngest sequence (its cache is recomputed later); it never fails a step.

mod config;
mod observer;
mod panic_guard;
mod request;
mod sequence;
mod state;
mod stop;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use epas_model::{EpasLlama, TextTokenizer};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

pub use config::{EngineConfig, KvCacheSize};
pub use observer::{EngineObserver, NoObserver, StepPhase};
pub use request::{
    EngineEvent, FinishReason, GenerationParams, GenerationRequest, TokenLogprobs, Usage,
};
pub use state::{EngineSnapshot, EngineState};
pub use stop::{StopCheck, StopMatcher};

/// Why a request was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    #[error("the server is overloaded: {waiting} requests are waiting")]
    Overloaded { waiting: usize },
    #[error("the server is shutting down")]
    Draining,
    #[error("the engine has stopped")]
    Stopped,
    #[error("{0}")]
    Invalid(String),
}

pub(crate) struct Submission {
    pub id: u64,
    pub request: GenerationRequest,
    pub events: tokio::sync::mpsc::UnboundedSender<EngineEvent>,
    pub arrival: Instant,
}

/// A cheap, cloneable way to talk to the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Submission>,
    state: Arc<EngineState>,
    next_id: Arc<AtomicU64>,
    config: EngineConfig,
    max_context: usize,
}

impl EngineHandle {
    /// Starts the engine thread over `model`.
    pub fn start(
        model: Arc<EpasLlama>,
        tokenizer: Arc<TextTokenizer>,
        config: EngineConfig,
        observer: Arc<dyn EngineObserver>,
    ) -> Result<Self, String> {
        config.validate()?;
        let (tx, rx) = mpsc::channel();
        let state = Arc::new(EngineState::default());
        let max_context = model.max_context();
        let worker = worker::Worker::new(
            model,
            tokenizer,
            config.clone(),
            rx,
            state.clone(),
            observer,
        )
        .map_err(|e| e.to_string())?;
        let thread_state = state.clone();
        std::thread::Builder::new()
            .name("epas-engine".into())
            .spawn(move || panic_guard::run_recording_panics(&thread_state, || worker.run()))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            tx,
            state,
            next_id: Arc::new(AtomicU64::new(1)),
            config,
            max_context,
        })
    }

    /// Queues a request; its events arrive on the returned receiver. Dropping the receiver
    /// cancels the request at the next step.
    pub fn submit(
        &self,
        request: GenerationRequest,
    ) -> Result<UnboundedReceiver<EngineEvent>, SubmitError> {
        if self.state.stopped.load(Ordering::SeqCst) {
            return Err(SubmitError::Stopped);
        }
        if self.state.draining.load(Ordering::Relaxed) {
            return Err(SubmitError::Draining);
        }
        if request.prompt.is_empty() {
            return Err(SubmitError::Invalid("the prompt has no tokens".into()));
        }
        if request.prompt.len() >= self.max_context {
            return Err(SubmitError::Invalid(format!(
                "the prompt has {} tokens; the model's context is {} (one must remain for output)",
                request.prompt.len(),
                self.max_context
            )));
        }
        if request.params.n == 0 || request.params.max_tokens == 0 {
            return Err(SubmitError::Invalid(
                "n and max_tokens must be at least 1".into(),
            ));
        }
        if request.params.n > self.config.max_batch_size {
            return Err(SubmitError::Invalid(format!(
                "n = {} exceeds the batch size {}",
                request.params.n, self.config.max_batch_size
            )));
        }
        let waiting = self.state.waiting.fetch_add(1, Ordering::SeqCst);
        if waiting >= self.config.max_waiting {
            self.state.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::Overloaded { waiting });
        }
        let (events, rx) = unbounded_channel();
        let submission = Submission {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            request,
            events,
            arrival: Instant::now(),
        };
        if self.tx.send(submission).is_err() {
            self.state.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::Stopped);
        }
        Ok(rx)
    }

    /// The panic message that ended the engine thread, if it died.
    pub fn failure(&self) -> Option<&str> {
        self.state.failure.get().map(String::as_str)
    }

    pub fn state(&self) -> &EngineState {
        &self.state
    }

    pub fn snapshot(&self) -> EngineSnapshot {
        self.state.snapshot()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Refuse new requests from now on; running ones finish.
    pub fn drain(&self) {
        self.state.draining.store(true, Ordering::SeqCst);
    }
}
