//! How callers reach the engine thread: start it, validate and submit requests, drain.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use epas_model::TextTokenizer;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::config::EngineConfig;
use super::engine_thread::EngineThread;
use super::executor::Executor;
use super::model::StepModel;
use super::observer::EngineObserver;
use super::panic_guard;
use super::request::{EngineEvent, GenerationRequest};
use super::scheduler::Scheduler;
use super::state::{EngineSnapshot, EngineState};
use super::structured::ConstraintCompiler;
use super::validate::{Refusal, RequestLimits, ValidRequest, Validator};
use super::Submission;

/// Why a valid request was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    #[error("the server is overloaded: {waiting} requests are waiting")]
    Overloaded { waiting: usize },
    #[error("the server is shutting down")]
    Draining,
    #[error("the engine has stopped")]
    Stopped,
}

/// A cheap, cloneable way to talk to the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Submission>,
    state: Arc<EngineState>,
    next_id: Arc<AtomicU64>,
    config: EngineConfig,
    validator: Arc<Validator>,
}

impl EngineHandle {
    /// Starts the engine thread over `model`.
    pub fn start(
        model: Arc<dyn StepModel>,
        tokenizer: Arc<TextTokenizer>,
        config: EngineConfig,
        observer: Arc<dyn EngineObserver>,
    ) -> Result<Self, String> {
        config.validate()?;
        let (layers, width) = (model.num_layers(), model.kv_width());
        let blocks = config.kv_blocks(layers, width);
        if blocks == 0 {
            return Err("the KV cache holds no block".into());
        }
        // Host blocks, or one arena on the model's device when it runs the tensor forward.
        let pool = model
            .block_pool(blocks, config.block_size, config.kv_dtype)
            .map_err(|e| e.to_string())?;
        let limits = RequestLimits {
            num_layers: layers,
            vocab_size: model.vocab_size(),
            max_context: model.max_context(),
            kv_blocks: blocks,
            block_size: config.block_size,
            max_n: config.max_batch_size,
        };
        let validator = Arc::new(Validator {
            limits,
            compiler: ConstraintCompiler::new(tokenizer.clone(), model.vocab_size()),
        });
        let state = Arc::new(EngineState::default());
        state.kv_blocks_total.store(blocks, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        let thread = EngineThread {
            executor: Executor::new(model, tokenizer.eos_tokens.clone()),
            scheduler: Scheduler::new(config.clone(), pool, tokenizer, observer.clone()),
            rx,
            state: state.clone(),
            observer,
            channels: Default::default(),
        };
        let thread_state = state.clone();
        std::thread::Builder::new()
            .name("epas-engine".into())
            .spawn(move || {
                panic_guard::run_recording_panics(&thread_state, || thread.run());
                thread_state.stopped.store(true, Ordering::SeqCst);
            })
            .map_err(|e| e.to_string())?;
        Ok(Self {
            tx,
            state,
            next_id: Arc::new(AtomicU64::new(1)),
            config,
            validator,
        })
    }

    /// What requests are checked against.
    pub fn limits(&self) -> &RequestLimits {
        &self.validator.limits
    }

    /// The validation step: checks `request` against the model and the engine and compiles its
    /// output constraint (on the caller's thread, not the engine's).
    pub fn validate(&self, request: GenerationRequest) -> Result<ValidRequest, Refusal> {
        self.validator.validate(request)
    }

    /// Queues a request; its events arrive on the returned receiver. Dropping the receiver
    /// cancels the request at the next step.
    pub fn submit(
        &self,
        request: ValidRequest,
    ) -> Result<UnboundedReceiver<EngineEvent>, SubmitError> {
        self.accepting()?;
        let before = self.state.submitted.fetch_add(1, Ordering::SeqCst);
        let waiting = before + self.state.queued.load(Ordering::SeqCst);
        if waiting >= self.config.max_waiting {
            self.state.submitted.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::Overloaded { waiting });
        }
        let (events, rx) = unbounded_channel();
        let submission = Submission {
            id: self.next_id.fetch_add(1, Ordering::SeqCst),
            request,
            events,
            arrival: Instant::now(),
        };
        if self.tx.send(submission).is_err() {
            self.state.submitted.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::Stopped);
        }
        Ok(rx)
    }

    /// Whether a request submitted now would be taken (it may still be refused as overloaded
    /// when others arrive first): a cheap check before costly validation.
    pub fn accepting(&self) -> Result<(), SubmitError> {
        if self.state.draining.load(Ordering::SeqCst) {
            return Err(SubmitError::Draining);
        }
        if !self.state.alive() {
            return Err(SubmitError::Stopped);
        }
        let waiting =
            self.state.submitted.load(Ordering::SeqCst) + self.state.queued.load(Ordering::SeqCst);
        if waiting >= self.config.max_waiting {
            return Err(SubmitError::Overloaded { waiting });
        }
        Ok(())
    }

    /// The panic message that ended the engine thread, if it died.
    pub fn failure(&self) -> Option<&str> {
        self.state.failure()
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
