//! `epas train`: progressive-sharing training from scratch or from a checkpoint.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use epas_train::{Architecture, Progress, TrainOptions};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training text: files or folders (read recursively), UTF-8.
    #[arg(long, num_args = 1.., required_unless_present = "resume")]
    pub data: Vec<PathBuf>,
    /// Output folder: the model (model.safetensors, config.json, tokenizer.json), the
    /// checkpoint, train_log.csv and loss.png.
    #[arg(long)]
    pub out: PathBuf,
    /// Continual pretraining: start from this GGUF file or HF folder.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Use this tokenizer.json instead of training a BPE on the data.
    #[arg(long, conflicts_with = "vocab_size")]
    pub tokenizer: Option<PathBuf>,
    /// Size of the BPE vocabulary trained on the data (from-scratch runs).
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// Decoder layers of a from-scratch model.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Hidden size of a from-scratch model.
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Attention heads of a from-scratch model.
    #[arg(long)]
    pub heads: Option<usize>,
    /// Key/value heads of a from-scratch model (grouped-query attention).
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// Feed-forward (MLP) inner size of a from-scratch model.
    #[arg(long)]
    pub ffn: Option<usize>,
    /// Context the trained model serves (default: --seq-len).
    #[arg(long)]
    pub context: Option<usize>,
    /// Optimizer steps.
    #[arg(long, required_unless_present = "resume")]
    pub steps: Option<usize>,
    /// Tokens per training sequence.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Peak learning rate (warmup, then cosine decay to --min-lr-ratio of it).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Learning rate at the end of the cosine decay, as a fraction of --lr.
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_ratio: f64,
    /// Warmup steps.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Target sharing ratio: the deepest floor(ratio * layers) layers end up sharing.
    #[arg(long, default_value_t = 0.5)]
    pub sharing_ratio: f64,
    /// Steps between two growths of the sharing set (default: full target at 60% of the run).
    #[arg(long)]
    pub interval: Option<usize>,
    /// Layers added to the sharing set at each growth.
    #[arg(long, default_value_t = 1)]
    pub block: usize,
    /// Plain training: every layer computes (the baseline).
    #[arg(long)]
    pub no_epas: bool,
    /// Ablation: the sharing layers form groups of --block layers separated by computing layers,
    /// each group sharing from the computing layer above it (such checkpoints are not served).
    #[arg(long)]
    pub multi_block: bool,
    /// Flexible-ratio training: each micro-batch trains at a sharing depth drawn up to the
    /// schedule's (the schedule's own half of the time), so every ratio up to the trained one
    /// serves well from one checkpoint.
    #[arg(long)]
    pub flexible: bool,
    #[command(flatten)]
    pub device: super::device::DeviceArgs,
    /// Continue the run in --out from its checkpoint (its options are reused).
    #[arg(long)]
    pub resume: bool,
    /// Stop after this step (with a checkpoint); the schedule still runs to --steps.
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Validation text (default: every 20th training sequence is held out).
    #[arg(long)]
    pub val_data: Option<PathBuf>,
    /// Fraction of training sequences held out for validation when no --val-data is given.
    #[arg(long, default_value_t = 0.05)]
    pub val_fraction: f64,
    /// Steps between validation runs (default: steps / 20).
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Validation batches per run.
    #[arg(long, default_value_t = 8)]
    pub eval_batches: usize,
    /// Steps between checkpoints (default: steps / 10).
    #[arg(long)]
    pub save_every: Option<usize>,
    /// Steps between progress lines.
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    /// Seed of the initialisation and the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl TrainArgs {
    fn options(&self) -> (TrainOptions, bool) {
        let mut o = TrainOptions::new(self.data.clone(), self.out.clone(), self.steps.unwrap_or(1));
        let d = o.arch.clone();
        let arch_given = self.layers.is_some()
            || self.hidden.is_some()
            || self.heads.is_some()
            || self.kv_heads.is_some()
            || self.ffn.is_some();
        o.arch = Architecture {
            layers: self.layers.unwrap_or(d.layers),
            hidden: self.hidden.unwrap_or(d.hidden),
            heads: self.heads.unwrap_or(d.heads),
            kv_heads: self.kv_heads.unwrap_or(d.kv_heads),
            ffn: self.ffn.unwrap_or(d.ffn),
            rope_theta: d.rope_theta,
            context: self.context.unwrap_or(0),
        };
        o.init = self.init.clone();
        o.tokenizer = self.tokenizer.clone();
        o.vocab_size = self.vocab_size.unwrap_or(o.vocab_size);
        o.val_data = self.val_data.clone();
        o.val_fraction = self.val_fraction;
        o.seq_len = self.seq_len;
        o.batch_size = self.batch_size;
        o.grad_accum = self.grad_accum;
        o.lr = self.lr;
        o.min_lr_ratio = self.min_lr_ratio;
        o.warmup = self.warmup;
        o.weight_decay = self.weight_decay;
        o.grad_clip = self.grad_clip;
        o.sharing_ratio = self.sharing_ratio;
        o.interval = self.interval.unwrap_or(0);
        o.block = self.block;
        o.no_epas = self.no_epas;
        o.multi_block = self.multi_block;
        o.flexible = self.flexible;
        o.seed = self.seed;
        o.eval_every = self.eval_every.unwrap_or(0);
        o.eval_batches = self.eval_batches;
        o.save_every = self.save_every.unwrap_or(0);
        o.log_every = self.log_every.max(1);
        o.stop_after = self.stop_after;
        (o, arch_given)
    }
}

fn bar(done: usize, total: usize) -> String {
    let width = 20;
    let filled = (done * width)
        .checked_div(total)
        .unwrap_or(width)
        .min(width);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

fn print_progress(p: &Progress<'_>, log_every: usize) {
    let r = p.record;
    let done = r.step + 1;
    if !(done.is_multiple_of(log_every) || r.val_loss.is_some() || done == p.total_steps) {
        return;
    }
    let left = r.elapsed_s / done as f64 * (p.total_steps - done) as f64;
    let val = r
        .val_loss
        .map(|v| format!(" | val {v:.4}"))
        .unwrap_or_default();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "step {done:>6}/{} {} loss {:.4}{val} | lr {:.2e} | {:.0} tok/s | sharing {}/{} layers | epoch {:.2} | {:.0}s left",
        p.total_steps,
        bar(done, p.total_steps),
        r.loss,
        r.lr,
        r.tokens_per_second,
        r.sharing_layers,
        p.target_layers,
        p.epochs,
        left
    );
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let (mut opts, arch_given) = args.options();
    opts.device = args.device.train_device()?;
    eprintln!("training on {}", opts.device);
    let log_every = opts.log_every;
    let summary = epas_train::train(opts, arch_given, args.resume, &mut |p| {
        print_progress(p, log_every)
    })?;
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).unwrap_or_default()
    );
    eprintln!(
        "{} {} steps, {} tokens, {} parameters, {:.0}s; model in {}",
        if summary.finished {
            "trained"
        } else {
            "stopped after"
        },
        summary.steps,
        summary.tokens,
        summary.parameters,
        summary.elapsed_s,
        args.out.display()
    );
    Ok(())
}
