use std::path::PathBuf;

/// What the trainer refuses or fails at, with messages a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("schedule: {0}")]
    Schedule(String),
    #[error("corpus: {0}")]
    Corpus(String),
    #[error("{path} is not UTF-8 text: {message}")]
    NotUtf8 { path: PathBuf, message: String },
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("invalid training option: {0}")]
    Options(String),
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("the initial checkpoint does not fit: {0}")]
    IncompatibleInit(String),
    #[error("training diverged at step {step}: loss is {loss}")]
    Diverged { step: usize, loss: f32 },
    #[error("plot: {0}")]
    Plot(String),
    #[error(transparent)]
    Model(#[from] epas_model::ModelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl TrainError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
        move |source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type TrainResult<T> = std::result::Result<T, TrainError>;
