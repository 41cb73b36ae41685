//! `epas bench`: single-stream prefill and decode speed per sharing ratio, like `llama-bench`
//! (synthetic prompt tokens, repeated runs, median).

use std::time::Instant;

use clap::Args;
use epas_model::{Logits, SequenceStep};
use serde::Serialize;

use super::ModelArgs;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Tokens decoded one at a time after a prompt of `--decode-context` tokens.
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Context already in the cache when decoding starts.
    #[arg(long, default_value_t = 0)]
    pub decode_context: usize,
    /// Sharing ratios to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub ratios: Vec<f64>,
    /// Runs per measurement; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct BenchRow {
    sharing_ratio: f64,
    sharing_layers: usize,
    prefill_tokens: usize,
    prefill_tokens_per_second: f64,
    decode_context: usize,
    decode_tokens: usize,
    decode_tokens_per_second: f64,
    prefill_runs: Vec<f64>,
    decode_runs: Vec<f64>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.repeats == 0 || args.prompt_tokens == 0 {
        anyhow::bail!("--repeats and --prompt-tokens must be positive");
    }
    let (model, _) = args.model.load()?;
    let vocab = model.config().vocab_size as u32;
    let plans = args
        .ratios
        .iter()
        .map(|&r| model.info.plan(r, args.model.allow_untrained_sharing))
        .collect::<Result<Vec<_>, _>>()?;
    let synthetic = |n: usize, salt: u32| -> Vec<u32> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2654435761).wrapping_add(salt) >> 7) % vocab)
            .collect()
    };
    let mut rows = Vec::new();
    // Interleave ratios within each repeat so that machine noise hits all of them alike.
    let mut prefill: Vec<Vec<f64>> = vec![Vec::new(); plans.len()];
    let mut decode: Vec<Vec<f64>> = vec![Vec::new(); plans.len()];
    for rep in 0..=args.repeats {
        for (i, plan) in plans.iter().enumerate() {
            let prompt = synthetic(args.prompt_tokens, rep as u32);
            let mut cache = model.new_cache(*plan, prompt.len())?;
            let started = Instant::now();
            model.forward(&mut [SequenceStep {
                tokens: &prompt,
                cache: cache.as_mut(),
                logits: Logits::Last,
            }])?;
            let prefill_s = started.elapsed().as_secs_f64();

            let ctx = synthetic(args.decode_context.max(1), rep as u32 + 1);
            let mut cache = model.new_cache(*plan, ctx.len() + args.gen_tokens)?;
            model.forward(&mut [SequenceStep {
                tokens: &ctx,
                cache: cache.as_mut(),
                logits: Logits::Last,
            }])?;
            let started = Instant::now();
            let mut token = [1u32];
            for t in 0..args.gen_tokens {
                token[0] = (t as u32 * 7919 + 13) % vocab;
                model.forward(&mut [SequenceStep {
                    tokens: &token,
                    cache: cache.as_mut(),
                    logits: Logits::Last,
                }])?;
            }
            let decode_s = started.elapsed().as_secs_f64();
            // The first repeat warms caches and page tables; it is not counted.
            if rep > 0 {
                prefill[i].push(args.prompt_tokens as f64 / prefill_s);
                decode[i].push(args.gen_tokens as f64 / decode_s);
            }
        }
    }
    for (i, plan) in plans.iter().enumerate() {
        let (mut p, mut d) = (prefill[i].clone(), decode[i].clone());
        rows.push(BenchRow {
            sharing_ratio: args.ratios[i],
            sharing_layers: plan.sharing_layers(),
            prefill_tokens: args.prompt_tokens,
            prefill_tokens_per_second: median(&mut p),
            decode_context: args.decode_context.max(1),
            decode_tokens: args.gen_tokens,
            decode_tokens_per_second: median(&mut d),
            prefill_runs: prefill[i].clone(),
            decode_runs: decode[i].clone(),
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "| sharing ratio | sharing layers | prefill {} tok/s | decode {} tok/s (context {}) |",
            args.prompt_tokens,
            args.gen_tokens,
            args.decode_context.max(1)
        );
        println!("|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {} | {:.1} | {:.1} |",
                r.sharing_ratio,
                r.sharing_layers,
                r.prefill_tokens_per_second,
                r.decode_tokens_per_second
            );
        }
    }
    Ok(())
}
