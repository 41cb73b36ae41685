//! The training loop: progressive schedule, gradient accumulation, clipping, AdamW, periodic
//! validation and checkpoints, exact resume, and the final model folder.

use std::time::Instant;

use candle_core::{Device, Tensor};

use crate::device::TrainDevice;

use crate::checkpoint::{self, TrainState};
use crate::data::{read_corpus, BatchOrder, Dataset, Windows};
use crate::error::{TrainError, TrainResult};
use crate::forward::{loss, ForwardContext};
use crate::log::{plot_losses, write_atomic, write_csv, DepthLoss, StepRecord};
use crate::optimizer::{clip_global_norm, learning_rate, AdamW, AdamWConfig, Update};
use crate::options::TrainOptions;
use crate::params::TrainParams;
use crate::schedule::ProgressiveSchedule;
use crate::setup::{self, TokenizerMeta};
use epas_model::SharingPlan;
use epas_model::TextTokenizer;

/// What the caller sees after each step.
pub struct Progress<'a> {
    pub record: &'a StepRecord,
    pub total_steps: usize,
    pub target_layers: usize,
    pub epochs: f64,
}

/// The outcome of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainSummary {
    pub steps: usize,
    pub tokens: u64,
    pub parameters: usize,
    pub final_loss: f32,
    pub final_val_loss: Option<f32>,
    pub sharing_layers: usize,
    pub elapsed_s: f64,
    pub finished: bool,
}

/// Mean validation loss over the first `batches` validation batches under `sources`.
pub fn validation_loss(
    params: &TrainParams,
    ctx: &ForwardContext,
    windows: &Windows,
    batch_size: usize,
    batches: usize,
    sources: &[usize],
    on: &TrainDevice,
) -> TrainResult<f32> {
    let n = windows.len().min(batch_size * batches.max(1));
    let mut total = 0f64;
    let mut rows = 0usize;
    for chunk in (0..n).collect::<Vec<_>>().chunks(batch_size) {
        let t = stack(windows, chunk.iter().copied(), on)?;
        let l = loss(params, ctx, &t, sources)?.to_scalar::<f32>()? as f64;
        total += l * chunk.len() as f64;
        rows += chunk.len();
    }
    Ok((total / rows.max(1) as f64) as f32)
}

/// The windows `idx` as one `(rows, seq + 1)` batch on the run's device.
fn stack(
    windows: &Windows,
    idx: impl Iterator<Item = usize>,
    on: &TrainDevice,
) -> TrainResult<Tensor> {
    let mut data = Vec::new();
    let mut rows = 0;
    for i in idx {
        data.extend_from_slice(windows.get(i));
        rows += 1;
    }
    Ok(on.put(&Tensor::from_vec(
        data,
        (rows, windows.seq_len + 1),
        &Device::Cpu,
    )?)?)
}

struct Run {
    opts: TrainOptions,
    params: TrainParams,
    tokenizer: TextTokenizer,
    info: epas_model::ModelInfo,
    data: Dataset,
    schedule: Option<ProgressiveSchedule>,
    target_layers: usize,
    optimizer: AdamW,
    state: TrainState,
}

/// Starts a run (or resumes the one in `opts.out` when `resume`), trains to `opts.steps` or
/// `opts.stop_after`, and writes the model folder.
pub fn train(
    mut opts: TrainOptions,
    arch_given: bool,
    resume: bool,
    on_step: &mut dyn FnMut(&Progress<'_>),
) -> TrainResult<TrainSummary> {
    let mut run = if resume {
        let ckpt = checkpoint::load(&opts.out)?;
        let stop_after = opts.stop_after;
        let out = opts.out.clone();
        let on = opts.device.clone();
        opts = ckpt.state.options.clone();
        opts.out = out;
        opts.stop_after = stop_after;
        opts.device = on;
        opts.validate()?;
        if opts.multi_block && opts.multi_block_layout < crate::options::MULTI_BLOCK_LAYOUT {
            return Err(TrainError::Checkpoint {
                path: opts.out.clone(),
                message: "this run was started with the earlier --multi-block, which trained the \
                          single-block layout; its groups are now separated by their own sources, \
                          so it cannot resume: start a new run"
                    .into(),
            });
        }
        let meta: TokenizerMeta = ckpt.state.tokenizer.clone();
        let tokenizer = meta.load(&ckpt.tokenizer_path)?;
        let docs = read_corpus(&opts.data)?;
        let start = if opts.init.is_some() {
            setup::initial_model(&opts, false, &docs)?
        } else {
            let config = ckpt.state.model_config.clone();
            let model = epas_model::random_model(config, None, opts.seed)?;
            setup::Start {
                params: TrainParams::from_model(&model)?,
                info: model.info.clone(),
                tokenizer: tokenizer.clone(),
            }
        };
        start.params.load_from(&ckpt.weights)?;
        let data = setup::load_data(&opts, &docs, &tokenizer, start.params.config.vocab_size)?;
        if data.train.len() != ckpt.state.train_windows {
            return Err(TrainError::Checkpoint {
                path: opts.out.clone(),
                message: format!(
                    "the data now gives {} training sequences, the run started with {}: \
                     resume needs the same --data",
                    data.train.len(),
                    ckpt.state.train_windows
                ),
            });
        }
        let optimizer = AdamW::restore(
            ckpt.state.adamw,
            &ckpt.optimizer,
            &ckpt.state.optimizer_steps,
            opts.device.device(),
        )?;
        let (schedule, target_layers) = schedule_for(&opts, start.params.config.num_layers)?;
        let mut info = start.info;
        info.name = ckpt.state.model_name.clone();
        Run {
            params: start.params.to_device(opts.device.device())?,
            tokenizer,
            info,
            data,
            schedule,
            target_layers,
            optimizer,
            state: ckpt.state,
            opts,
        }
    } else {
        opts.validate()?;
        setup::refuse_existing_run(&opts.out)?;
        let docs = read_corpus(&opts.data)?;
        let start = setup::initial_model(&opts, arch_given, &docs)?;
        let data = setup::load_data(
            &opts,
            &docs,
            &start.tokenizer,
            start.params.config.vocab_size,
        )?;
        let (schedule, target_layers) = schedule_for(&opts, start.params.config.num_layers)?;
        setup::prepare_output(&opts.out)?;
        let adamw = AdamWConfig {
            weight_decay: opts.weight_decay,
            ..AdamWConfig::default()
        };
        let state = TrainState {
            format_version: 1,
            step: 0,
            tokens: 0,
            seed: opts.seed,
            samples_drawn: 0,
            train_windows: data.train.len(),
            options: opts.clone(),
            model_config: start.params.config.clone(),
            model_name: start.info.name.clone(),
            tokenizer: TokenizerMeta::of(&start.tokenizer),
            adamw,
            optimizer_steps: Default::default(),
            log: Vec::new(),
            elapsed_s: 0.0,
        };
        Run {
            params: start.params.to_device(opts.device.device())?,
            tokenizer: start.tokenizer,
            info: start.info,
            data,
            schedule,
            target_layers,
            optimizer: AdamW::new(adamw),
            state,
            opts,
        }
    };
    run.go(on_step)
}

fn schedule_for(
    opts: &TrainOptions,
    num_layers: usize,
) -> TrainResult<(Option<ProgressiveSchedule>, usize)> {
    if opts.no_epas {
        return Ok((None, 0));
    }
    let k = SharingPlan::new(num_layers, opts.sharing_ratio)
        .map_err(|e| TrainError::Schedule(e.to_string()))?
        .sharing_layers();
    let s = ProgressiveSchedule::new(num_layers, k, opts.interval_for(k), opts.block)?;
    let s = if opts.multi_block {
        s.into_multi_block()?
    } else {
        s
    };
    Ok((Some(s), k))
}

impl Run {
    fn sources(&self, step: usize) -> Vec<usize> {
        match &self.schedule {
            Some(s) => s.sources_at(step),
            None => (0..self.params.config.num_layers).collect(),
        }
    }

    /// The sources micro-batch `micro` of `step` trains with: the schedule's, or with
    /// `--flexible` those of a depth drawn up to the schedule's.
    fn training_sources(&self, step: usize, micro: usize) -> Vec<usize> {
        match &self.schedule {
            Some(s) if self.opts.flexible => {
                s.sources_with(s.flexible_depth(self.opts.seed, step, micro))
            }
            _ => self.sources(step),
        }
    }

    /// Validation loss at each depth the per-ratio curves show (the schedule's current depth
    /// among them), on the first `eval_batches` validation batches.
    fn validate_depths(&self, step: usize, ctx: &ForwardContext) -> TrainResult<Vec<DepthLoss>> {
        let depths = self
            .schedule
            .as_ref()
            .map_or_else(|| vec![0], |s| s.eval_depths(step));
        depths
            .into_iter()
            .map(|depth| {
                let sources = match &self.schedule {
                    Some(s) => s.sources_with(depth),
                    None => self.sources(step),
                };
                let loss = validation_loss(
                    &self.params,
                    ctx,
                    &self.data.validation,
                    self.opts.batch_size,
                    self.opts.eval_batches,
                    &sources,
                    &self.opts.device,
                )?;
                Ok(DepthLoss {
                    sharing_layers: depth,
                    loss,
                })
            })
            .collect()
    }

    fn sharing_layers(&self, step: usize) -> usize {
        self.schedule
            .as_ref()
            .map_or(0, |s| s.sharing_layers_at(step))
    }

    fn go(&mut self, on_step: &mut dyn FnMut(&Progress<'_>)) -> TrainResult<TrainSummary> {
        let opts = self.opts.clone();
        let ctx = ForwardContext::new(&self.params, opts.seq_len, &opts.device)?;
        let mut order = BatchOrder::new(opts.seed, self.data.train.len());
        let stop = opts.stop_after.unwrap_or(opts.steps).min(opts.steps);
        let started = Instant::now();
        let elapsed_before = self.state.elapsed_s;
        let names: Vec<String> = self.params.named().into_iter().map(|p| p.name).collect();
        while self.state.step < stop {
            let step = self.state.step;
            let t0 = Instant::now();
            let lr = learning_rate(step, opts.steps, opts.warmup, opts.lr, opts.min_lr_ratio);
            let mut grads: Vec<Option<Tensor>> = vec![None; names.len()];
            let mut step_loss = 0f64;
            for micro in 0..opts.grad_accum {
                let sources = self.training_sources(step, micro);
                let first = self.state.samples_drawn;
                let idx: Vec<usize> = (first..first + opts.batch_size)
                    .map(|n| order.window(n))
                    .collect();
                self.state.samples_drawn += opts.batch_size;
                let batch = stack(&self.data.train, idx.into_iter(), &opts.device)?;
                let l = loss(&self.params, &ctx, &batch, &sources)?;
                let value = l.to_scalar::<f32>()?;
                if !value.is_finite() {
                    return Err(TrainError::Diverged { step, loss: value });
                }
                step_loss += value as f64 / opts.grad_accum as f64;
                let store = (l / opts.grad_accum as f64)?.backward()?;
                for (slot, p) in grads.iter_mut().zip(self.params.named()) {
                    if let Some(g) = store.get(p.var) {
                        *slot = Some(match slot.take() {
                            Some(acc) => (acc + g)?,
                            None => g.clone(),
                        });
                    }
                }
            }
            let grad_norm = clip_global_norm(&mut grads, opts.grad_clip)?;
            {
                let named = self.params.named();
                let updates: Vec<Update<'_>> = named
                    .iter()
                    .zip(grads)
                    .map(|(p, grad)| Update {
                        name: &p.name,
                        var: p.var,
                        grad,
                        decay: p.decay,
                    })
                    .collect();
                self.optimizer.step(&updates, lr)?;
            }
            self.state.step += 1;
            self.state.tokens += opts.tokens_per_step() as u64;
            // Validation is not training: it stays out of the step's tokens/s.
            let tokens_per_second = opts.tokens_per_step() as f64 / t0.elapsed().as_secs_f64();
            let done = self.state.step;
            let val_by_depth = if done.is_multiple_of(opts.eval_every()) || done == stop {
                self.validate_depths(step, &ctx)?
            } else {
                Vec::new()
            };
            let current = self.sharing_layers(step);
            let val_loss = val_by_depth
                .iter()
                .find(|d| d.sharing_layers == current)
                .map(|d| d.loss);
            let record = StepRecord {
                step,
                tokens: self.state.tokens,
                loss: step_loss as f32,
                val_loss,
                val_by_depth,
                lr,
                sharing_layers: current,
                grad_norm,
                tokens_per_second,
                elapsed_s: elapsed_before + started.elapsed().as_secs_f64(),
            };
            self.state.log.push(record.clone());
            self.state.elapsed_s = record.elapsed_s;
            on_step(&Progress {
                record: &record,
                total_steps: opts.steps,
                target_layers: self.target_layers,
                epochs: order.epochs(self.state.samples_drawn),
            });
            if done.is_multiple_of(opts.save_every()) || done == stop {
                self.save()?;
            }
        }
        if self.state.log.is_empty() {
            self.save()?;
        }
        let last = self.state.log.last();
        Ok(TrainSummary {
            steps: self.state.step,
            tokens: self.state.tokens,
            parameters: self.params.count(),
            final_loss: last.map_or(f32::NAN, |r| r.loss),
            final_val_loss: self.state.log.iter().rev().find_map(|r| r.val_loss),
            sharing_layers: self.sharing_layers(self.state.step.saturating_sub(1)),
            elapsed_s: self.state.elapsed_s,
            finished: self.state.step >= opts.steps,
        })
    }

    /// Checkpoint, model folder, CSV log and loss plot, each written atomically.
    fn save(&mut self) -> TrainResult<()> {
        let out = self.opts.out.clone();
        let (_, steps) = self.optimizer.state();
        self.state.optimizer_steps = steps;
        checkpoint::save(
            &out,
            &self.state,
            &self.params,
            &self.optimizer,
            &self.tokenizer,
        )?;
        let last_step = self.state.step.saturating_sub(1);
        let mut info = self.info.clone();
        // A multi-block checkpoint says so (`schedule.method`), and loaders refuse it by name.
        info.epas = setup::epas_meta(
            self.params.config.num_layers,
            self.sharing_layers(last_step),
            (self.opts.sharing_ratio, self.target_layers),
            self.schedule_json(),
        );
        let model = self.params.to_model(info)?;
        epas_model::save_model_files(&model, &self.tokenizer, &out)?;
        write_csv(&out.join("train_log.csv"), &self.state.log)?;
        let switches = self
            .schedule
            .as_ref()
            .map(|s| s.switch_steps(self.opts.steps))
            .unwrap_or_default();
        plot_losses(&out.join("loss.png"), &self.state.log, &switches)?;
        let last_eval = self
            .state
            .log
            .iter()
            .rev()
            .find(|r| !r.val_by_depth.is_empty());
        let perplexity_by_depth: serde_json::Map<String, serde_json::Value> = last_eval
            .map(|r| {
                r.val_by_depth
                    .iter()
                    .map(|d| {
                        (
                            d.sharing_layers.to_string(),
                            serde_json::json!(d.perplexity()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let summary = serde_json::json!({
            "steps_done": self.state.step,
            "schedule": self.schedule_json(),
            "final_val_loss": self.state.log.iter().rev().find_map(|r| r.val_loss),
            "final_val_perplexity_by_sharing_layers": perplexity_by_depth,
        });
        write_atomic(
            &out.join("train_summary.json"),
            serde_json::to_string_pretty(&summary)
                .unwrap_or_default()
                .as_bytes(),
        )
    }

    fn schedule_json(&self) -> serde_json::Value {
        let o = &self.opts;
        serde_json::json!({
            "method": if o.no_epas { "none" } else if o.multi_block { "epas-multi-block" } else { "epas" },
            "flexible": o.flexible,
            "target_sharing_ratio": o.sharing_ratio,
            "target_sharing_layers": self.target_layers,
            "interval": self.schedule.as_ref().map(|s| s.interval),
            "block": o.block,
            "steps_planned": o.steps,
            "steps_done": self.state.step,
            "tokens": self.state.tokens,
            "seq_len": o.seq_len,
            "batch_size": o.batch_size,
            "grad_accum": o.grad_accum,
            "lr": o.lr,
            "data": setup::data_names(&o.data),
            "init": o.init.as_ref().map(|p| p.display().to_string()),
            "seed": o.seed,
        })
    }
}
