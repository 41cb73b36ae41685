//! Command-line interface: flags, logging and dispatch to the subcommands.

mod bench;
mod bench_batch;
mod bench_train;
mod check_device;
mod device;
mod eval;
mod eval_defaults;
mod export;
#[cfg(test)]
mod flag_help;
mod generate;
mod memory;
mod model_args;
mod serve;
mod speculative_args;
mod train;

use clap::{Parser, Subcommand};

pub use model_args::ModelArgs;

#[derive(Debug, Parser)]
#[command(
    name = "epas",
    version,
    about = "EPAS Serve: LLaMA models with progressive activation sharing"
)]
pub struct Cli {
    /// Worker threads for matrix and attention kernels (default: all cores).
    #[arg(long, global = true, env = "EPAS_THREADS")]
    pub threads: Option<usize>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "EPAS_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the OpenAI-compatible HTTP API (completions, chat, SSE, metrics).
    Serve(serve::ServeArgs),
    /// Generate text from a prompt, streamed to stdout; speed goes to stderr.
    Generate(generate::GenerateArgs),
    /// Perplexity and tokens/s of a model on a text, for each sharing ratio.
    Eval(eval::EvalArgs),
    /// Single-stream prefill and decode tokens/s per sharing ratio (synthetic prompts).
    Bench(bench::BenchArgs),
    /// Aggregate generated tokens/s of the batching engine per concurrency and ratio.
    BenchBatch(bench_batch::BenchBatchArgs),
    /// Training tokens/s per number of sharing layers (full steps on a random model).
    BenchTrain(bench_train::BenchTrainArgs),
    /// Train with the progressive sharing schedule (from scratch or from --init).
    Train(train::TrainArgs),
    /// Check the GPU code path (tensor forward) against the host kernels: logits per sharing
    /// ratio and batch invariance (`--device cuda`, or `cpu-tensor` without a GPU).
    CheckDevice(check_device::CheckDeviceArgs),
    /// Write a checkpoint as a GGUF file (q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1, q4_0, f16 or f32) with epas.* metadata.
    Export(export::ExportArgs),
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(a) => serve::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Bench(a) => bench::run(a),
        Command::BenchBatch(a) => bench_batch::run(a),
        Command::BenchTrain(a) => bench_train::run(a),
        Command::Train(a) => train::run(a),
        Command::Export(a) => export::run(a),
        Command::CheckDevice(a) => check_device::run(a),
    }
}

pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour_logs());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Colour codes only for a person at a terminal who has not asked for none
/// (<https://no-color.org>): a file or a pipe keeps plain text.
fn colour_logs() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Sizes both thread pools candle uses (rayon for matmuls, its own for elementwise ops read
/// `RAYON_NUM_THREADS` too).
pub fn set_threads(threads: usize) {
    let threads = threads.max(1);
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
}
