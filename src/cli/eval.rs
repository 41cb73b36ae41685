//! `epas eval`: perplexity and tokens/s per sharing ratio.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use epas_model::SharedAttention;
use epas_model::{perplexity, EvalRow};

use super::eval_defaults::{default_ratios, default_window, FEW_SCORED_TOKENS};
use super::ModelArgs;

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// UTF-8 text to score.
    #[arg(long)]
    pub text: PathBuf,
    /// Comma-separated sharing ratios (default: those of 0, 0.25 and 0.5 the model serves).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub ratios: Option<Vec<f64>>,
    /// Window length in tokens; windows do not overlap and their first token is not scored
    /// (default: 512, or the model's context when shorter).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Use only the first N tokens of the text.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Recompute attention probabilities in sharing layers instead of reusing the source's.
    #[arg(long)]
    pub recompute_attention: bool,
    /// Print JSON rows instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.text).with_context(|| format!("reading {}", args.text.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{} is not UTF-8 text: {e}", args.text.display()))?;
    if args.ratios.as_ref().is_some_and(Vec::is_empty) {
        anyhow::bail!("--ratios needs at least one ratio");
    }
    let (mut model, tokenizer) = args.model.load()?;
    let allow = args.model.allow_untrained_sharing;
    let ratios = match args.ratios {
        Some(ratios) => ratios,
        None => {
            let (ratios, note) = default_ratios(&model.info, allow);
            if let Some(note) = note {
                eprintln!("{note}");
            }
            ratios
        }
    };
    let ctx = args
        .ctx
        .unwrap_or_else(|| default_window(model.max_context()));
    let plans = ratios
        .iter()
        .map(|&r| model.info.plan(r, allow))
        .collect::<Result<Vec<_>, _>>()?;
    if args.recompute_attention {
        model.set_shared_attention(SharedAttention::Recompute);
    }
    // Kernel loading on a device (seconds on a fresh GPU machine) is not the first ratio's speed.
    model.warm_up()?;
    let mut tokens = tokenizer.encode(&text)?;
    if let Some(max) = args.max_tokens {
        tokens.truncate(max);
    }
    if tokens.len() < 2 {
        anyhow::bail!("{} has fewer than 2 tokens", args.text.display());
    }
    let mut rows: Vec<EvalRow> = Vec::new();
    for (&ratio, plan) in ratios.iter().zip(plans) {
        let row = perplexity(&model, &tokens, ctx, ratio, plan)?;
        if !args.json {
            eprintln!(
                "ratio {ratio}: perplexity {:.2}, {:.1} tok/s",
                row.perplexity, row.tokens_per_second
            );
        }
        rows.push(row);
    }
    if let Some(scored) = rows.first().map(|r| r.scored_tokens) {
        if scored < FEW_SCORED_TOKENS {
            eprintln!(
                "warning: only {scored} tokens scored; perplexities of fewer than \
                 {FEW_SCORED_TOKENS} tokens scored are too noisy to compare ratios by"
            );
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows, tokens.len(), ctx);
    }
    Ok(())
}

fn print_table(rows: &[EvalRow], tokens: usize, ctx: usize) {
    println!("{tokens} tokens, windows of {ctx}");
    println!("| sharing ratio | sharing layers | source layer | perplexity | vs first row | tokens/s | KV bytes/token |");
    println!("|---|---|---|---|---|---|---|");
    let base = rows.first().map(|r| r.perplexity).unwrap_or(f64::NAN);
    for r in rows {
        println!(
            "| {} | {} | {} | {:.2} | {:+.1}% | {:.1} | {} |",
            r.sharing_ratio,
            r.sharing_layers,
            r.source_layer.map(|s| s.to_string()).unwrap_or("-".into()),
            r.perplexity,
            (r.perplexity / base - 1.0) * 100.0,
            r.tokens_per_second,
            r.kv_cache_bytes_per_token
        );
    }
}
