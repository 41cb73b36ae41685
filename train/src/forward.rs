//! The differentiable forward of the EPAS LLaMA for training: the same layer arithmetic as the
//! inference forward (`EpasLlama::forward`, checked equal by a test), written with candle ops
//! that carry gradients. A sharing layer takes the attention probabilities of its source layer,
//! so its Wq/Wk are outside the graph and receive no gradient, while the source's Q/K receive
//! the gradients of every layer that uses them.

use candle_core::Tensor;

use crate::device::TrainDevice;
use crate::ops::{cross_entropy, rms_norm, softmax_last_dim};
use crate::params::TrainParams;
use epas_model::RopeTable;

/// Per-shape constants of the forward (RoPE tables, the causal mask) on the run's device, and
/// which ops it uses.
#[derive(Debug, Clone)]
pub struct ForwardContext {
    seq_len: usize,
    fused: bool,
    cos: Tensor,
    sin: Tensor,
    mask: Tensor,
}

impl ForwardContext {
    pub fn new(
        params: &TrainParams,
        seq_len: usize,
        on: &TrainDevice,
    ) -> candle_core::Result<Self> {
        let device = on.device();
        let c = &params.config;
        let table = RopeTable::for_config(c, seq_len);
        let (cos, sin) = table.cos_sin(seq_len);
        let half = c.head_dim() / 2;
        let cos = Tensor::from_slice(cos, (seq_len, half), device)?;
        let sin = Tensor::from_slice(sin, (seq_len, half), device)?;
        let mask: Vec<f32> = (0..seq_len)
            .flat_map(|i| (0..seq_len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (seq_len, seq_len), device)?;
        Ok(Self {
            seq_len,
            fused: on.fused(),
            cos,
            sin,
            mask,
        })
    }

    pub fn seq_len(&self) -> usize {
        self.seq_len
    }
}

/// `x W^T` for `x` of shape `(n, in)`.
fn linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    x.matmul(&w.t()?)
}

/// Logits `(batch * seq, vocab)` of `ids` `(batch, seq)`. `sources[l]` is the layer whose
/// attention probabilities layer `l` uses (`l` itself when it computes).
pub fn forward(
    params: &TrainParams,
    ctx: &ForwardContext,
    ids: &Tensor,
    sources: &[usize],
) -> candle_core::Result<Tensor> {
    let c = &params.config;
    let (b, s) = ids.dims2()?;
    let (h, kvh, hd, d) = (c.num_heads, c.num_kv_heads, c.head_dim(), c.hidden_size);
    let group = h / kvh;
    let eps = c.rms_norm_eps as f32;
    let scale = 1.0 / (hd as f64).sqrt();
    let cos = ctx.cos.narrow(0, 0, s)?;
    let sin = ctx.sin.narrow(0, 0, s)?;
    let mask = ctx.mask.narrow(0, 0, s)?.narrow(1, 0, s)?;

    let mut x = params
        .embed
        .as_tensor()
        .index_select(&ids.flatten_all()?, 0)?;
    let mut probs: Vec<Option<Tensor>> = vec![None; params.layers.len()];
    for (l, layer) in params.layers.iter().enumerate() {
        let hn = rms_norm(&x, layer.attn_norm.as_tensor(), eps, ctx.fused)?;
        // (b, kvh, s, hd)
        let v = linear(&hn, layer.wv.as_tensor())?
            .reshape((b, s, kvh, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let p = if sources[l] == l {
            let q = linear(&hn, layer.wq.as_tensor())?
                .reshape((b, s, h, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            let k = linear(&hn, layer.wk.as_tensor())?
                .reshape((b, s, kvh, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            let q = candle_nn::rotary_emb::rope_slow(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_slow(&k, &cos, &sin)?;
            // Grouped-query attention without copying K: the heads of one KV group are stacked
            // along the row axis, (b, kvh, group * s, hd) x (b, kvh, hd, s).
            let q = q.reshape((b, kvh, group * s, hd))?;
            let scores = (q.matmul(&k.t()?)? * scale)?.reshape((b, h, s, s))?;
            let scores = scores.broadcast_add(&mask)?;
            softmax_last_dim(&scores, ctx.fused)?
        } else {
            probs[sources[l]]
                .clone()
                .ok_or_else(|| candle_core::Error::Msg(format!("layer {l}: source not computed")))?
        };
        let attn = p
            .reshape((b, kvh, group * s, s))?
            .matmul(&v)?
            .reshape((b, h, s, hd))?
            .transpose(1, 2)?
            .reshape((b * s, d))?;
        if sources.iter().skip(l + 1).any(|&src| src == l) {
            probs[l] = Some(p);
        }
        x = (x + linear(&attn, layer.wo.as_tensor())?)?;
        let hn = rms_norm(&x, layer.mlp_norm.as_tensor(), eps, ctx.fused)?;
        let gate = candle_nn::ops::silu(&linear(&hn, layer.gate.as_tensor())?)?;
        let up = linear(&hn, layer.up.as_tensor())?;
        x = (x + linear(&(gate * up)?, layer.down.as_tensor())?)?;
    }
    let x = rms_norm(&x, params.norm.as_tensor(), eps, ctx.fused)?;
    let head = params.lm_head.as_ref().unwrap_or(&params.embed);
    linear(&x, head.as_tensor())
}

/// Mean next-token cross-entropy of `windows` `(batch, seq + 1)`.
pub fn loss(
    params: &TrainParams,
    ctx: &ForwardContext,
    windows: &Tensor,
    sources: &[usize],
) -> candle_core::Result<Tensor> {
    let s = windows.dim(1)? - 1;
    let inputs = windows.narrow(1, 0, s)?;
    let targets = windows.narrow(1, 1, s)?.flatten_all()?;
    let logits = forward(params, ctx, &inputs, sources)?;
    cross_entropy(&logits, &targets, ctx.fused)
}
