//! `epas bench-batch`: aggregate generation throughput of the engine (continuous batching) at
//! several concurrencies and sharing ratios, in process (no HTTP), closed loop.

use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use epas_model::kv_bytes_per_token;
use epas_server::engine::{
    EngineConfig, EngineEvent, EngineHandle, GenerationParams, GenerationRequest, KvCacheSize,
    NoObserver,
};
use serde::Serialize;

use super::speculative_args::SpeculativeArgs;
use super::ModelArgs;

#[derive(Debug, Args)]
pub struct BenchBatchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Concurrent requests to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub concurrency: Vec<usize>,
    /// Sharing ratios to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,0.5")]
    pub ratios: Vec<f64>,
    /// Prompt length of each request.
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Requests per measurement, at least the concurrency (default: 2 x concurrency).
    #[arg(long)]
    pub requests: Option<usize>,
    /// Tokens per engine step (decode rows plus prefill chunks), as `serve`.
    #[arg(long, default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// Prompt tokens per engine step while some sequence is decoding, as `serve`.
    #[arg(long, default_value_t = 128)]
    pub max_prefill_while_decoding: usize,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub speculative: SpeculativeArgs,
}

#[derive(Debug, Serialize)]
struct Row {
    sharing_ratio: f64,
    sharing_layers: usize,
    concurrency: usize,
    requests: usize,
    generated_tokens: usize,
    seconds: f64,
    generated_tokens_per_second: f64,
    kv_cache_bytes_per_token: usize,
}

pub fn run(args: BenchBatchArgs) -> anyhow::Result<()> {
    let (model, tokenizer) = args.model.load()?;
    // A device compiles and loads its kernels on first use (seconds on a fresh GPU machine):
    // that belongs to no measurement.
    model.warm_up()?;
    let (model, tokenizer) = (Arc::new(model), Arc::new(tokenizer));
    let vocab = model.config().vocab_size as u32;
    let max_c = args.concurrency.iter().copied().max().unwrap_or(1);
    let config = EngineConfig {
        max_batch_size: max_c.max(1),
        max_batch_tokens: args.max_batch_tokens,
        max_prefill_while_decoding: args.max_prefill_while_decoding,
        max_waiting: 4 * max_c + 16,
        prefix_cache: false,
        kv_cache: KvCacheSize::Tokens((args.prompt_tokens + args.gen_tokens + 16) * max_c),
        kv_dtype: model.kv_dtype(),
        speculative: args.speculative.config()?,
        ..Default::default()
    };
    let engine = EngineHandle::start(model.clone(), tokenizer, config, Arc::new(NoObserver))
        .map_err(anyhow::Error::msg)?;
    let mut rows = Vec::new();
    for &ratio in &args.ratios {
        let plan = model.info.plan(ratio, args.model.allow_untrained_sharing)?;
        for &c in &args.concurrency {
            let total = args.requests.unwrap_or(2 * c).max(c);
            let make = |i: usize| GenerationRequest {
                prompt: (0..args.prompt_tokens as u32)
                    .map(|t| {
                        (t.wrapping_mul(2654435761).wrapping_add(i as u32 * 7919) >> 9) % vocab
                    })
                    .collect(),
                plan,
                params: GenerationParams {
                    max_tokens: args.gen_tokens,
                    ignore_eos: true,
                    ..Default::default()
                },
                constraint: None,
            };
            let started = Instant::now();
            let (done_tx, done_rx) = std::sync::mpsc::channel::<usize>();
            let mut submitted = 0;
            let mut in_flight = 0;
            let mut generated = 0;
            while submitted < total || in_flight > 0 {
                while in_flight < c && submitted < total {
                    let request = engine.validate(make(submitted))?;
                    let mut rx = engine.submit(request)?;
                    let tx = done_tx.clone();
                    std::thread::spawn(move || {
                        let mut n = 0;
                        while let Some(ev) = rx.blocking_recv() {
                            match ev {
                                EngineEvent::Token { .. } => n += 1,
                                EngineEvent::Done { .. } | EngineEvent::Error(_) => break,
                                _ => {}
                            }
                        }
                        let _ = tx.send(n);
                    });
                    submitted += 1;
                    in_flight += 1;
                }
                generated += done_rx.recv()?;
                in_flight -= 1;
            }
            let seconds = started.elapsed().as_secs_f64();
            let row = Row {
                sharing_ratio: ratio,
                sharing_layers: plan.sharing_layers(),
                concurrency: c,
                requests: total,
                generated_tokens: generated,
                seconds,
                generated_tokens_per_second: generated as f64 / seconds,
                kv_cache_bytes_per_token: kv_bytes_per_token(
                    model.config(),
                    &plan,
                    model.kv_dtype(),
                ),
            };
            if !args.json {
                eprintln!(
                    "ratio {ratio} concurrency {c}: {:.1} generated tok/s",
                    row.generated_tokens_per_second
                );
            }
            rows.push(row);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("| sharing ratio | concurrency | requests | generated tok/s | KV bytes/token |");
        println!("|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {} | {} | {:.1} | {} |",
                r.sharing_ratio,
                r.concurrency,
                r.requests,
                r.generated_tokens_per_second,
                r.kv_cache_bytes_per_token
            );
        }
    }
    Ok(())
}
