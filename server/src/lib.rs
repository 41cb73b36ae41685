//! EPAS Serve: the serving engine (continuous batching of requests with per-request sharing
//! ratios over a paged KV cache) and, next, the OpenAI-compatible HTTP server.

pub mod engine;
