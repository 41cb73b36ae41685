//! Training speed per sharing depth: full steps (forward, backward, AdamW) of one model with
//! 0..=k sharing layers, interleaved so machine noise hits every depth alike, next to the FLOP
//! saving the model shape predicts.

use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::device::TrainDevice;
use crate::error::TrainResult;
use crate::forward::{loss, ForwardContext};
use crate::optimizer::{AdamW, AdamWConfig, Update};
use crate::params::TrainParams;
use epas_model::LlamaConfig;

/// Forward FLOPs per token of one layer and the part a sharing layer skips (Wq/Wk projections,
/// RoPE, `Q K^T` and softmax over a `seq`-token causal window, computed as a full square).
pub fn layer_flops(c: &LlamaConfig, seq: usize) -> (f64, f64) {
    let (d, kv, ffn, h) = (
        c.hidden_size as f64,
        c.kv_dim() as f64,
        c.intermediate_size as f64,
        c.num_heads as f64,
    );
    let s = seq as f64;
    let qk_proj = 2.0 * d * (d + kv);
    let rope = 6.0 * (d + kv);
    let scores = 2.0 * s * d + 5.0 * s * h;
    let total = qk_proj + rope + scores + 2.0 * d * kv + 2.0 * d * d + 6.0 * d * ffn + 2.0 * s * d;
    (total, qk_proj + rope + scores)
}

/// Share of a training step's FLOPs that `k` sharing layers skip (backward scales like forward).
pub fn analytic_saving(c: &LlamaConfig, seq: usize, k: usize) -> f64 {
    let (layer, skipped) = layer_flops(c, seq);
    let head = 2.0 * (c.hidden_size * c.vocab_size) as f64;
    k as f64 * skipped / (c.num_layers as f64 * layer + head)
}

/// One row of the benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainBenchRow {
    pub sharing_layers: usize,
    pub tokens_per_second: f64,
    pub speedup_vs_no_sharing: f64,
    pub analytic_flop_saving: f64,
    pub analytic_speedup: f64,
}

/// Median tokens/s of a training step on `on` for every sharing depth `0..=max_k`.
pub fn bench_training(
    config: LlamaConfig,
    seq: usize,
    batch: usize,
    max_k: usize,
    repeats: usize,
    on: &TrainDevice,
) -> TrainResult<Vec<TrainBenchRow>> {
    let model = epas_model::random_model(config.clone(), None, 1)?;
    let params = TrainParams::from_model(&model)?.to_device(on.device())?;
    let ctx = ForwardContext::new(&params, seq, on)?;
    let mut rng = StdRng::seed_from_u64(2);
    let tokens: Vec<u32> = (0..batch * (seq + 1))
        .map(|_| rng.random_range(0..config.vocab_size as u32))
        .collect();
    let windows = on.put(&Tensor::from_vec(tokens, (batch, seq + 1), &Device::Cpu)?)?;
    let mut opt = AdamW::new(AdamWConfig::default());
    let layers = config.num_layers;
    let mut step = |k: usize| -> TrainResult<f64> {
        let src = layers - k - 1;
        let sources: Vec<usize> = (0..layers).map(|l| if l > src { src } else { l }).collect();
        let t0 = Instant::now();
        let grads = loss(&params, &ctx, &windows, &sources)?.backward()?;
        let named = params.named();
        let updates: Vec<Update<'_>> = named
            .iter()
            .map(|p| Update {
                name: &p.name,
                var: p.var,
                grad: grads.get(p.var).cloned(),
                decay: p.decay,
            })
            .collect();
        opt.step(&updates, 1e-6)?;
        // A GPU queues the work: the step ends when the device is done.
        on.device().synchronize()?;
        Ok(t0.elapsed().as_secs_f64())
    };
    step(0)?;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); max_k + 1];
    for _ in 0..repeats.max(1) {
        for (k, t) in times.iter_mut().enumerate() {
            t.push(step(k)?);
        }
    }
    let tokens = (batch * seq) as f64;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let base = tokens / median(&mut times[0].clone());
    Ok(times
        .iter_mut()
        .enumerate()
        .map(|(k, t)| {
            let tps = tokens / median(t);
            let saving = analytic_saving(&config, seq, k);
            TrainBenchRow {
                sharing_layers: k,
                tokens_per_second: tps,
                speedup_vs_no_sharing: tps / base - 1.0,
                analytic_flop_saving: saving,
                analytic_speedup: 1.0 / (1.0 - saving) - 1.0,
            }
        })
        .collect())
}
