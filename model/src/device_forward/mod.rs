//! The forward pass on candle tensors, for devices other than the host CPU (CUDA). The host path
//! ([`crate::host_forward`]) runs this crate's SIMD kernels on slices; this one expresses the same
//! EPAS forward (per-sequence sharing plans, Q/K only for computing rows, P reuse, K cached only
//! for compute layers) as tensor ops, so candle's CUDA backend runs it unchanged. It runs on the
//! CPU too, which is how the tests check it against the host path.
//!
//! Weights are dense in the compute dtype (quantized GGUF tensors dequantized once at load) or
//! kept as GGUF blocks ([`DeviceWeights`]); K/V rows live in a device block pool's arena
//! ([`crate::paged::BlockPool::on_device`]).

mod attention_groups;
mod forward;
mod matrix;

use candle_core::{DType, Device, Tensor};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::host_weights::HostWeights;
use crate::linear::Linear;
use crate::rope::RopeTable;

pub(crate) use forward::DeviceForward;
pub use matrix::DeviceWeights;
use matrix::{place, DeviceMatrix};

/// One decoder layer's weights on the device.
#[derive(Debug)]
struct DeviceLayer {
    attn_norm: Tensor,
    /// `(hidden + kv_dim, hidden)`: Q rows then K rows, one matmul for computing rows.
    wqk: DeviceMatrix,
    wv: DeviceMatrix,
    wo: DeviceMatrix,
    mlp_norm: Tensor,
    /// `(2 * ffn, hidden)`: gate rows then up rows.
    gate_up: DeviceMatrix,
    down: DeviceMatrix,
}

/// The model's weights on a device, plus the RoPE tables.
#[derive(Debug)]
pub struct DeviceModel {
    device: Device,
    dtype: DType,
    embed: Tensor,
    layers: Vec<DeviceLayer>,
    norm: Tensor,
    lm_head: DeviceMatrix,
    cos: Tensor,
    sin: Tensor,
    ffn: usize,
}

impl DeviceModel {
    /// Moves `host`'s weights to `device`: norms and embeddings as `dtype` (f32, f16 or bf16),
    /// matrices as `dtype` or GGUF blocks (`weights`). Each host layer is dropped once copied,
    /// so the host and device copies of the whole model are never held together.
    pub(crate) fn from_host(
        host: HostWeights,
        config: &LlamaConfig,
        rope: &RopeTable,
        device: &Device,
        dtype: DType,
        weights: DeviceWeights,
    ) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(ModelError::Config(format!(
                "device compute dtype must be f32, f16 or bf16, not {dtype:?}"
            )));
        }
        let put = |t: &Tensor| -> Result<Tensor> {
            Ok(t.to_dtype(DType::F32)?
                .to_dtype(dtype)?
                .to_device(device)?
                .contiguous()?)
        };
        let matrix = |parts: &[&Linear]| place(parts, device, dtype, weights);
        let HostWeights {
            embed,
            layers,
            norm,
            lm_head,
        } = host;
        let layers = layers
            .into_iter()
            .map(|l| {
                Ok(DeviceLayer {
                    attn_norm: put(&l.attn_norm)?,
                    wqk: matrix(&[&l.wq, &l.wk])?,
                    wv: matrix(&[&l.wv])?,
                    wo: matrix(&[&l.wo])?,
                    mlp_norm: put(&l.mlp_norm)?,
                    gate_up: matrix(&[&l.gate, &l.up])?,
                    down: matrix(&[&l.down])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embed = put(&embed.dequantized()?)?;
        let lm_head = matrix(&[&lm_head])?;
        let (cos, sin) = rope.cos_sin(rope.max_positions());
        let half = config.head_dim() / 2;
        let positions = cos.len() / half.max(1);
        let table = |v: &[f32]| -> Result<Tensor> {
            put(&Tensor::from_slice(v, (positions, half), &Device::Cpu)?)
        };
        Ok(Self {
            device: device.clone(),
            dtype,
            embed,
            layers,
            norm: put(&norm)?,
            lm_head,
            cos: table(cos)?,
            sin: table(sin)?,
            ffn: config.intermediate_size,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
}
