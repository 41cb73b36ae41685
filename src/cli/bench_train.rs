//! `epas bench-train`: training tokens/s per number of sharing layers against no sharing, with
//! the FLOP saving the model shape predicts.

use clap::Args;
use epas_model::LlamaConfig;
use epas_train::bench::bench_training;

#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// Decoder layers of the random model.
    #[arg(long, default_value_t = 8)]
    pub layers: usize,
    /// Hidden size of the random model.
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Key/value heads (grouped-query attention).
    #[arg(long, default_value_t = 2)]
    pub kv_heads: usize,
    /// Feed-forward (MLP) inner size.
    #[arg(long, default_value_t = 352)]
    pub ffn: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 4096)]
    pub vocab_size: usize,
    /// Tokens per training sequence.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Measure 0..=N sharing layers (default: half the layers).
    #[arg(long)]
    pub max_sharing_layers: Option<usize>,
    /// Steps per depth (interleaved); the median is reported.
    #[arg(long, default_value_t = 7)]
    pub repeats: usize,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: super::device::DeviceArgs,
}

pub fn run(a: BenchTrainArgs) -> anyhow::Result<()> {
    let config = LlamaConfig {
        vocab_size: a.vocab_size,
        hidden_size: a.hidden,
        intermediate_size: a.ffn,
        num_layers: a.layers,
        num_heads: a.heads,
        num_kv_heads: a.kv_heads,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: a.seq_len,
        tie_word_embeddings: true,
        rope_scaling: Default::default(),
    };
    config.validate()?;
    let max_k = a.max_sharing_layers.unwrap_or(a.layers / 2);
    anyhow::ensure!(
        max_k < a.layers,
        "--max-sharing-layers must be below --layers"
    );
    let on = a.device.train_device()?;
    let rows = bench_training(config, a.seq_len, a.batch_size, max_k, a.repeats, &on)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("| sharing layers | training tok/s | measured speed-up | analytic FLOP saving | analytic speed-up |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:+.1}% | {:.1}% | {:+.1}% |",
            r.sharing_layers,
            r.tokens_per_second,
            100.0 * r.speedup_vs_no_sharing,
            100.0 * r.analytic_flop_saving,
            100.0 * r.analytic_speedup
        );
    }
    Ok(())
}
