//! `epas generate`: one prompt, streamed output, speed on stderr.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use epas_model::generate;
use epas_model::SamplingParams;
use epas_model::{ChatMessage, IncrementalDecoder};

use super::ModelArgs;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Fraction of the deepest layers that reuse the source layer's Q/K (0 = none).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub sharing_ratio: f64,
    /// Tokens to generate, at most.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Sample among the k most likely tokens only (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling: the smallest set of tokens whose probability reaches p (1 = all).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed of the sampler (the same seed gives the same text).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep generating past end-of-sequence tokens (for speed measurements).
    #[arg(long)]
    pub ignore_eos: bool,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    if !(args.temperature.is_finite() && args.temperature >= 0.0) {
        anyhow::bail!("--temperature must be a non-negative number");
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        anyhow::bail!("--top-p must be in (0, 1]");
    }
    let (model, tokenizer) = args.model.load()?;
    let plan = model
        .info
        .plan(args.sharing_ratio, args.model.allow_untrained_sharing)?;
    let text = if args.chat {
        let msg = ChatMessage {
            role: "user".into(),
            content: args.prompt.clone(),
        };
        tokenizer.apply_chat_template(&[msg], true)?
    } else {
        args.prompt.clone()
    };
    let prompt = tokenizer.encode(&text)?;
    if prompt.is_empty() {
        anyhow::bail!("the prompt is empty: give at least one token of text");
    }
    eprintln!(
        "sharing {} of {} layers{}",
        plan.sharing_layers(),
        plan.num_layers(),
        plan.source_layer()
            .map(|s| format!(" (source layer {s})"))
            .unwrap_or_default()
    );
    let eos: Vec<u32> = if args.ignore_eos {
        Vec::new()
    } else {
        tokenizer.eos_tokens.clone()
    };
    let mut decoder = IncrementalDecoder::new();
    let mut stdout = std::io::stdout().lock();
    let mut failed = None;
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        ..Default::default()
    };
    let generation = generate(
        &model,
        &prompt,
        plan,
        args.max_tokens,
        sampling,
        &eos,
        |t| match decoder.push(&tokenizer, t) {
            Ok(delta) => {
                let _ = write!(stdout, "{delta}");
                let _ = stdout.flush();
                true
            }
            Err(e) => {
                failed = Some(e);
                false
            }
        },
    )
    .context("generation failed")?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    let tail = decoder.flush(&tokenizer)?;
    writeln!(stdout, "{tail}")?;
    let n = generation.tokens.len();
    let prefill = prompt.len() as f64 / generation.prompt_time.as_secs_f64();
    let decode = n.saturating_sub(1) as f64 / generation.decode_time.as_secs_f64().max(1e-9);
    eprintln!(
        "prompt: {} tokens, {prefill:.1} tok/s; generated: {n} tokens, {decode:.1} tok/s; finish_reason: {}",
        prompt.len(),
        generation.finish.as_str()
    );
    Ok(())
}
