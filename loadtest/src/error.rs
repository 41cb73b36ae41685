//! The tool's own errors (not a measured request's failure: that is `outcome::ErrorKind`).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    /// A flag or flag combination that cannot work; exit status 2.
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },
    /// The server could not be asked what it serves (only when `--model` is not given).
    #[error("{0}")]
    Server(String),
    #[error("chart: {0}")]
    Plot(String),
    #[error("could not start the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl LoadtestError {
    pub fn usage(message: impl Into<String>) -> Self {
        LoadtestError::Usage(message.into())
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LoadtestError::Io {
            path: path.into(),
            source,
        }
    }

    /// 2 for usage errors (as clap's own), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            LoadtestError::Usage(_) => 2,
            _ => 1,
        }
    }
}

pub type Result<T> = std::result::Result<T, LoadtestError>;
