//! `epas serve`: the OpenAI-compatible HTTP server. Every flag can also come from an `EPAS_*`
//! environment variable.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Args;
use epas_model::Backend;
use epas_server::engine::{EngineConfig, KvCacheSize};
use epas_server::http::{serve, HttpConfig, ServerConfig};

use super::speculative_args::SpeculativeArgs;
use super::ModelArgs;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (`0.0.0.0` for every interface).
    #[arg(long, env = "EPAS_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on.
    #[arg(long, env = "EPAS_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Model id clients send (default: the file or folder name).
    #[arg(long, env = "EPAS_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,
    /// Sharing ratio of requests that do not choose one.
    #[arg(long, env = "EPAS_DEFAULT_SHARING_RATIO", default_value_t = 0.0)]
    pub default_sharing_ratio: f64,
    /// Accepted API keys (comma-separated or repeated); none means no authentication.
    #[arg(long = "api-key", env = "EPAS_API_KEY", value_delimiter = ',')]
    pub api_keys: Vec<String>,
    /// Sequences per engine step, at most.
    #[arg(long, env = "EPAS_MAX_BATCH_SIZE", default_value_t = 64)]
    pub max_batch_size: usize,
    /// Tokens per engine step (decode rows plus prefill chunks).
    #[arg(long, env = "EPAS_MAX_BATCH_TOKENS", default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// Prompt tokens per engine step while some sequence is decoding (bounds how much arriving
    /// prompts stretch the running streams' inter-token latency).
    #[arg(long, env = "EPAS_MAX_PREFILL_WHILE_DECODING", default_value_t = 128)]
    pub max_prefill_while_decoding: usize,
    /// Queued requests beyond which new ones get 429.
    #[arg(long, env = "EPAS_MAX_WAITING", default_value_t = 256)]
    pub max_waiting: usize,
    /// KV cache size in tokens of a sequence with no sharing layer (default 32768).
    #[arg(long, env = "EPAS_KV_CACHE_TOKENS", conflicts_with = "kv_cache_bytes")]
    pub kv_cache_tokens: Option<usize>,
    /// KV cache size in bytes.
    #[arg(long, env = "EPAS_KV_CACHE_BYTES")]
    pub kv_cache_bytes: Option<usize>,
    /// Positions per KV cache block.
    #[arg(long, env = "EPAS_BLOCK_SIZE", default_value_t = 16)]
    pub block_size: usize,
    /// Disable reuse of cached prompt prefixes across requests.
    #[arg(long, env = "EPAS_NO_PREFIX_CACHE")]
    pub no_prefix_cache: bool,
    /// Request bodies larger than this get 413.
    #[arg(long, env = "EPAS_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Seconds a non-streamed request may take (streams: until headers are sent).
    #[arg(long, env = "EPAS_REQUEST_TIMEOUT", default_value_t = 600)]
    pub request_timeout: u64,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "EPAS_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// Seconds the drain keeps answering 503 (and `/ready`, `/health` 503) after SIGTERM even when
    /// no request runs, so that routers and load balancers see it before the port closes (at most
    /// --shutdown-timeout).
    #[arg(long, env = "EPAS_DRAIN_GRACE", default_value_t = 0)]
    pub drain_grace: u64,
    /// CORS origins (comma-separated); `*` allows any.
    #[arg(
        long,
        env = "EPAS_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub cors_origins: Vec<String>,
    /// Largest `n` (choices per request) accepted.
    #[arg(long, env = "EPAS_MAX_N", default_value_t = 8)]
    pub max_n: usize,
    #[command(flatten)]
    pub speculative: SpeculativeArgs,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    if !(args.default_sharing_ratio.is_finite() && args.default_sharing_ratio >= 0.0) {
        anyhow::bail!("--default-sharing-ratio must be a non-negative number");
    }
    if args.api_keys.iter().any(|k| k.trim().is_empty()) {
        anyhow::bail!("--api-key must not be empty");
    }
    // Before the port is bound: an unusable --device fails the command, not the background load.
    args.model.device.resolve()?;
    let name = args.served_model_name.clone().unwrap_or_else(|| {
        args.model
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    let kv_cache = match (args.kv_cache_tokens, args.kv_cache_bytes) {
        (_, Some(b)) => KvCacheSize::Bytes(b),
        (Some(t), None) => KvCacheSize::Tokens(t),
        (None, None) => KvCacheSize::Tokens(32768),
    };
    let engine = EngineConfig {
        max_batch_size: args.max_batch_size,
        max_batch_tokens: args.max_batch_tokens,
        max_prefill_while_decoding: args.max_prefill_while_decoding,
        max_waiting: args.max_waiting,
        block_size: args.block_size,
        kv_cache,
        prefix_cache: !args.no_prefix_cache,
        kv_dtype: args.model.kv_cache_dtype,
        speculative: args.speculative.config()?,
    };
    engine.validate().map_err(anyhow::Error::msg)?;
    let config = ServerConfig {
        addr: SocketAddr::new(args.host, args.port),
        http: HttpConfig {
            served_model_name: name,
            allow_untrained_sharing: args.model.allow_untrained_sharing,
            default_sharing_ratio: args.default_sharing_ratio,
            api_keys: args.api_keys.clone(),
            max_n: args.max_n.max(1),
            max_stop_sequences: 16,
            max_logprobs: 20,
        },
        engine,
        max_body_bytes: args.max_body_bytes,
        request_timeout: Duration::from_secs(args.request_timeout.max(1)),
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        drain_grace: Duration::from_secs(args.drain_grace),
        cors_origins: args.cors_origins.clone(),
    };
    let model_args = args.model.clone();
    let default_ratio = args.default_sharing_ratio;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let load = move || {
        let (model, tokenizer) = model_args.load().map_err(|e| format!("{e:#}"))?;
        model
            .info
            .plan(default_ratio, model_args.allow_untrained_sharing)
            .map_err(|e| format!("--default-sharing-ratio: {e}"))?;
        if matches!(model.backend(), Backend::Device(_)) {
            // A GPU compiles and loads kernels on first use: not in the first request's time.
            let started = std::time::Instant::now();
            model
                .warm_up()
                .map_err(|e| format!("warming up the model: {e}"))?;
            tracing::info!(seconds = started.elapsed().as_secs_f32(), "model warmed up");
        }
        Ok((model, tokenizer))
    };
    runtime
        .block_on(serve(config, load))
        .map_err(|e| anyhow::anyhow!("{e}"))
}
