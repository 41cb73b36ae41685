//! The EPAS trainer: progressive sharing schedule, differentiable forward over the same weights
//! the server uses, AdamW, checkpoints with exact resume, logs and plots.

pub mod bench;
pub mod bpe;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod error;
pub mod forward;
pub mod log;
pub mod ops;
pub mod optimizer;
pub mod options;
pub mod params;
pub mod schedule;
pub mod setup;
pub mod trainer;

pub use device::TrainDevice;
pub use error::{TrainError, TrainResult};
pub use options::{Architecture, TrainOptions};
pub use params::TrainParams;
pub use schedule::ProgressiveSchedule;
pub use trainer::{train, Progress, TrainSummary};
