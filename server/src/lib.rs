//! EPAS Serve: the serving engine (continuous batching of requests with per-request sharing
//! ratios over a paged KV cache) and the OpenAI-compatible HTTP server.

pub mod engine;
pub mod http;
pub mod metrics;
mod vllm_metrics;
