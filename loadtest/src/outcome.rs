//! What one measured request produced: its timings, or the kind of failure.

use serde::{Deserialize, Serialize};

/// Why a request failed. Each kind is a separate error count in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The server answered with this non-2xx status (e.g. 429 when its queue is full).
    Http(u16),
    /// No TCP connection (refused, unreachable, DNS).
    Connect,
    /// The request ran past `--timeout` (headers or body).
    Timeout,
    /// The stream ended early: a read error, or the end without `[DONE]` or a finish reason.
    BrokenStream,
    /// The server put an `{"error": ...}` event into the stream.
    StreamError,
    /// A 2xx answer that is not an OpenAI stream (wrong content type, a chunk that is not JSON).
    BadResponse,
    /// Stopped by Ctrl-C before it finished.
    Cancelled,
}

impl ErrorKind {
    /// The key in reports: `http_429`, `connect`, `timeout`, `broken_stream`, ...
    pub fn key(&self) -> String {
        match self {
            ErrorKind::Http(code) => format!("http_{code}"),
            ErrorKind::Connect => "connect".into(),
            ErrorKind::Timeout => "timeout".into(),
            ErrorKind::BrokenStream => "broken_stream".into(),
            ErrorKind::StreamError => "stream_error".into(),
            ErrorKind::BadResponse => "bad_response".into(),
            ErrorKind::Cancelled => "cancelled".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub kind: ErrorKind,
    /// A short description (the server's error message, the I/O error), for the report.
    pub message: String,
}

/// Timings of a request that streamed to its end, in seconds from sending it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Success {
    /// Time to the first chunk that carries text; `None` when no text came at all.
    pub ttft: Option<f64>,
    /// Gaps between consecutive text chunks.
    pub itls: Vec<f64>,
    pub e2e: f64,
    /// From the server's `usage` when it sent one, otherwise the number of text chunks.
    pub output_tokens: u64,
    /// From the server's `usage`, otherwise the planned (approximate) prompt length.
    pub prompt_tokens: u64,
    /// Whether the token counts came from the server's `usage`.
    pub usage_reported: bool,
}

impl Success {
    /// Time per output token after the first: `(e2e - ttft) / (tokens - 1)`.
    pub fn tpot(&self) -> Option<f64> {
        let ttft = self.ttft?;
        (self.output_tokens > 1).then(|| (self.e2e - ttft) / (self.output_tokens - 1) as f64)
    }
}

/// One request of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The sharing ratio sent, `None` when none was sent.
    pub ratio: Option<f64>,
    /// Seconds from the start of the run to sending / to the end of the request.
    pub sent_at: f64,
    pub finished_at: f64,
    pub result: Result<Success, Failure>,
}
