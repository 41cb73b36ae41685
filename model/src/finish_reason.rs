//! Why a generated sequence ended, in the words the OpenAI API uses.

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence or stop token, a stop string, or the caller stopped it.
    Stop,
    /// `max_tokens` reached, or the model's context is full.
    Length,
}

impl FinishReason {
    /// `"stop"` or `"length"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}
