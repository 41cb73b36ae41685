//! The serving engine: one thread owns the model and runs steps; callers validate requests and
//! submit them through an [`EngineHandle`], then read a stream of [`EngineEvent`]s.
//!
//! A step is plain data between three parts: the [`scheduler`] decides which sequences run and
//! with which tokens (a `StepPlan`), the [`executor`] runs one forward over that mixed batch
//! (sequences of different sharing ratios together) and samples, and the scheduler applies the
//! outputs (tokens, finished choices, failed sequences) and queues the stream events. A full
//! block pool first evicts prefix-cache blocks, then preempts the youngest sequence (its cache is
//! recomputed later); what can never fit is refused at validation.

mod config;
mod engine_thread;
mod executor;
mod handle;
mod model;
mod observer;
mod panic_guard;
mod request;
mod scheduler;
mod speculative;
mod state;
mod stop;
mod structured;
mod validate;

use std::time::Instant;

pub use config::{EngineConfig, KvCacheSize};
pub use handle::{EngineHandle, SubmitError};
pub use model::StepModel;
pub use observer::{EngineObserver, NoObserver, StepPhase};
pub use request::{
    EngineEvent, Failure, FailureCause, FinishReason, GenerationParams, GenerationRequest,
    TokenLogprobs, Usage,
};
pub use speculative::SpeculativeConfig;
pub use state::{EngineSnapshot, EngineState};
pub use stop::{StopCheck, StopMatcher};
pub(crate) use structured::with_bounded_whitespace;
#[cfg(test)]
pub(crate) use structured::ConstraintCompiler;
pub use structured::{OutputConstraint, RequestConstraint};
pub use validate::{InvalidRequest, Refusal, RequestLimits, ValidRequest};

pub(crate) struct Submission {
    pub id: u64,
    pub request: ValidRequest,
    pub events: tokio::sync::mpsc::UnboundedSender<EngineEvent>,
    pub arrival: Instant,
}
