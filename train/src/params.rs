//! The trainable weights of an EPAS LLaMA as candle `Var`s, named as in HF checkpoints, and the
//! conversions to and from the inference model (which serves them unchanged).

use candle_core::{DType, Device, Tensor, Var};

use crate::error::{TrainError, TrainResult};
use epas_model::EpasLlama;
use epas_model::{DecoderLayer, HostWeights};
use epas_model::{Embedding, Linear};
use epas_model::{LlamaConfig, ModelInfo};

/// One decoder layer's weights.
#[derive(Debug, Clone)]
pub struct LayerParams {
    pub attn_norm: Var,
    pub wq: Var,
    pub wk: Var,
    pub wv: Var,
    pub wo: Var,
    pub mlp_norm: Var,
    pub gate: Var,
    pub up: Var,
    pub down: Var,
}

/// Every trainable tensor of the model.
#[derive(Debug, Clone)]
pub struct TrainParams {
    pub config: LlamaConfig,
    pub embed: Var,
    pub layers: Vec<LayerParams>,
    pub norm: Var,
    /// `None` when the LM head is tied to the embedding.
    pub lm_head: Option<Var>,
}

/// A parameter with its checkpoint name and whether weight decay applies (matrices yes, norm
/// gains no).
pub struct NamedParam<'a> {
    pub name: String,
    pub var: &'a Var,
    pub decay: bool,
}

fn var(t: Tensor) -> TrainResult<Var> {
    // A copy: the optimizer must never write into a tensor the caller still holds.
    Ok(Var::from_tensor(
        &t.to_dtype(DType::F32)?.contiguous()?.copy()?,
    )?)
}

impl TrainParams {
    /// Trainable copies of `model`'s weights (quantized weights are dequantized).
    pub fn from_model(model: &EpasLlama) -> TrainResult<Self> {
        let weights = model.host_weights()?;
        let mut layers = Vec::with_capacity(weights.layers.len());
        for l in &weights.layers {
            layers.push(LayerParams {
                attn_norm: var(l.attn_norm.clone())?,
                wq: var(l.wq.dequantized()?)?,
                wk: var(l.wk.dequantized()?)?,
                wv: var(l.wv.dequantized()?)?,
                wo: var(l.wo.dequantized()?)?,
                mlp_norm: var(l.mlp_norm.clone())?,
                gate: var(l.gate.dequantized()?)?,
                up: var(l.up.dequantized()?)?,
                down: var(l.down.dequantized()?)?,
            });
        }
        let config = model.config().clone();
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(var(weights.lm_head.dequantized()?)?)
        };
        Ok(Self {
            embed: var(weights.embed.dequantized()?)?,
            layers,
            norm: var(weights.norm.clone())?,
            lm_head,
            config,
        })
    }

    /// Trainable copies of these weights on `device`.
    pub fn to_device(&self, device: &Device) -> TrainResult<Self> {
        let on = |v: &Var| var(v.as_tensor().to_device(device)?);
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(LayerParams {
                    attn_norm: on(&l.attn_norm)?,
                    wq: on(&l.wq)?,
                    wk: on(&l.wk)?,
                    wv: on(&l.wv)?,
                    wo: on(&l.wo)?,
                    mlp_norm: on(&l.mlp_norm)?,
                    gate: on(&l.gate)?,
                    up: on(&l.up)?,
                    down: on(&l.down)?,
                })
            })
            .collect::<TrainResult<Vec<_>>>()?;
        Ok(Self {
            config: self.config.clone(),
            embed: on(&self.embed)?,
            layers,
            norm: on(&self.norm)?,
            lm_head: self.lm_head.as_ref().map(on).transpose()?,
        })
    }

    /// An inference model (on the host) over a snapshot of the current weights.
    pub fn to_model(&self, mut info: ModelInfo) -> TrainResult<EpasLlama> {
        let snap =
            |v: &Var| -> TrainResult<Tensor> { Ok(v.as_tensor().to_device(&Device::Cpu)?.copy()?) };
        let dense = |v: &Var| -> TrainResult<Linear> { Ok(Linear::dense(snap(v)?)?) };
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            layers.push(DecoderLayer {
                attn_norm: snap(&l.attn_norm)?,
                wq: dense(&l.wq)?,
                wk: dense(&l.wk)?,
                wv: dense(&l.wv)?,
                wo: dense(&l.wo)?,
                mlp_norm: snap(&l.mlp_norm)?,
                gate: dense(&l.gate)?,
                up: dense(&l.up)?,
                down: dense(&l.down)?,
            });
        }
        let embed = Embedding::Dense(snap(&self.embed)?);
        let lm_head = match &self.lm_head {
            Some(h) => dense(h)?,
            None => embed.as_linear()?,
        };
        info.config = self.config.clone();
        info.weight_format = "f32".into();
        Ok(EpasLlama::new(
            info,
            HostWeights {
                embed,
                layers,
                norm: snap(&self.norm)?,
                lm_head,
            },
        )?)
    }

    /// Every parameter in a fixed order, with its HF name.
    pub fn named(&self) -> Vec<NamedParam<'_>> {
        let mut out = vec![NamedParam {
            name: "model.embed_tokens.weight".into(),
            var: &self.embed,
            decay: true,
        }];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            for (name, var, decay) in [
                ("input_layernorm.weight", &l.attn_norm, false),
                ("self_attn.q_proj.weight", &l.wq, true),
                ("self_attn.k_proj.weight", &l.wk, true),
                ("self_attn.v_proj.weight", &l.wv, true),
                ("self_attn.o_proj.weight", &l.wo, true),
                ("post_attention_layernorm.weight", &l.mlp_norm, false),
                ("mlp.gate_proj.weight", &l.gate, true),
                ("mlp.up_proj.weight", &l.up, true),
                ("mlp.down_proj.weight", &l.down, true),
            ] {
                out.push(NamedParam {
                    name: format!("{p}.{name}"),
                    var,
                    decay,
                });
            }
        }
        out.push(NamedParam {
            name: "model.norm.weight".into(),
            var: &self.norm,
            decay: false,
        });
        if let Some(h) = &self.lm_head {
            out.push(NamedParam {
                name: "lm_head.weight".into(),
                var: h,
                decay: true,
            });
        }
        out
    }

    pub fn count(&self) -> usize {
        self.named().iter().map(|p| p.var.elem_count()).sum()
    }

    /// Overwrites every parameter from `tensors` (a checkpoint), checking names and shapes.
    pub fn load_from(
        &self,
        tensors: &std::collections::HashMap<String, Tensor>,
    ) -> TrainResult<()> {
        for p in self.named() {
            let t = tensors.get(&p.name).ok_or_else(|| {
                TrainError::IncompatibleInit(format!("{} is missing from the checkpoint", p.name))
            })?;
            if t.dims() != p.var.dims() {
                return Err(TrainError::IncompatibleInit(format!(
                    "{} has shape {:?}, the model needs {:?}",
                    p.name,
                    t.dims(),
                    p.var.dims()
                )));
            }
            p.var
                .set(&t.to_dtype(DType::F32)?.to_device(p.var.device())?)?;
        }
        Ok(())
    }
}
