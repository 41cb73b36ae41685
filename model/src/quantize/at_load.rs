//! Load-time quantization: the dense (f32/f16/bf16) matrices of a checkpoint stored as GGUF
//! blocks in memory, so an HF safetensors folder runs on the quantized kernels without a
//! conversion step (what `--quantize` does, like vLLM's `--quantization` or TGI's `--quantize`).

use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Tensor};

use super::blocks::{quantize, row_format};
use super::format::{GgufQuant, QuantScheme, Role};
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::host_weights::HostWeights;
use crate::linear::{Embedding, Linear};
use crate::model::EpasLlama;

/// What load-time quantization does to each float matrix as a loader reads it, so a checkpoint
/// is never held in f32 whole: quantized by the scheme (blocks rewritten for the CPU kernels
/// when `rewrite`), or kept dense without one. Counts the matrices it quantized.
#[derive(Debug)]
pub(crate) struct FloatMatrices {
    scheme: Option<QuantScheme>,
    rewrite: bool,
    quantized: usize,
}

impl FloatMatrices {
    pub(crate) fn new(scheme: Option<QuantScheme>, rewrite: bool) -> Result<Self> {
        if let Some(s) = scheme {
            if matches!(s.quant, GgufQuant::F32 | GgufQuant::F16) {
                return Err(ModelError::NotABlockFormat(s.quant.name().into()));
            }
        }
        Ok(Self {
            scheme,
            rewrite,
            quantized: 0,
        })
    }

    pub(crate) fn quantizes(&self) -> bool {
        self.scheme.is_some()
    }

    pub(crate) fn rewrite(&self) -> bool {
        self.rewrite
    }

    /// A float matrix (any float dtype) as a linear layer.
    pub(crate) fn linear(&mut self, w: &Tensor, role: Role, name: &str) -> Result<Linear> {
        match self.scheme {
            None => Linear::dense(w.clone()),
            Some(s) => {
                let q = quantize(&w.to_dtype(DType::F32)?, s.format_for(role), name)?;
                self.quantized += 1;
                Linear::quantized_with(q, self.rewrite)
            }
        }
    }

    /// A float embedding table; `tied`: it is the LM head too.
    pub(crate) fn table(&mut self, w: &Tensor, tied: bool) -> Result<Embedding> {
        match self.scheme {
            None => Ok(Embedding::Dense(w.to_dtype(DType::F32)?)),
            Some(s) => {
                let table = w.to_dtype(DType::F32)?;
                let format = s.format_for(Role::table(tied));
                let q = quantize(&table, format, "token_embd.weight")?;
                self.quantized += 1;
                Ok(Embedding::Quantized(Arc::new(q)))
            }
        }
    }

    /// After loading: quantization asked for a model with no float matrix is an error.
    pub(crate) fn finish(&self, format: &str) -> Result<usize> {
        if self.scheme.is_some() && self.quantized == 0 {
            return Err(ModelError::AlreadyQuantized {
                format: format.into(),
            });
        }
        Ok(self.quantized)
    }
}

impl EpasLlama {
    /// Stores every float matrix (the layers' projections, the LM head and the embedding table)
    /// in the scheme's block format (the LM head by [`QuantScheme::head`], as `epas export`
    /// writes it), rewritten for this crate's CPU kernels when `rewrite` is set, as a GGUF file
    /// of that format would load. Matrices already quantized stay as they are.
    /// Returns how many matrices changed; a model with none is an error, as is a model already
    /// placed on a device (quantize before [`EpasLlama::on_device`]).
    pub fn quantize_weights(
        &mut self,
        scheme: impl Into<QuantScheme>,
        rewrite: bool,
    ) -> Result<usize> {
        let scheme = scheme.into();
        let mut floats = FloatMatrices::new(Some(scheme), rewrite)?;
        let c = self.info.config.clone();
        let weights = self.host_weights_mut()?;
        check_blocks_fit(weights, &c, scheme)?;
        for (i, layer) in weights.layers.iter_mut().enumerate() {
            for (name, l) in [
                ("attn_q", &mut layer.wq),
                ("attn_k", &mut layer.wk),
                ("attn_v", &mut layer.wv),
                ("attn_output", &mut layer.wo),
                ("ffn_gate", &mut layer.gate),
                ("ffn_up", &mut layer.up),
                ("ffn_down", &mut layer.down),
            ] {
                if let Some(w) = float_values(l)? {
                    *l = floats.linear(&w, Role::Layer, &format!("blk.{i}.{name}.weight"))?;
                }
            }
        }
        let tied = c.tie_word_embeddings;
        if let Some(table) = float_table(&weights.embed)? {
            let q = floats.table(&table, tied)?;
            if tied {
                // One table serves the lookups and the LM head, as in a GGUF file.
                (weights.embed, weights.lm_head) = q.tied(rewrite)?;
            } else {
                weights.embed = q;
            }
        }
        if let Some(w) = float_values(&weights.lm_head)? {
            weights.lm_head = floats.linear(&w, Role::Head, "output.weight")?;
        }
        let format = weights.layers[0].wv.format();
        let changed = floats.finish(&self.info.weight_format)?;
        self.info.weight_format = format;
        Ok(changed)
    }

    /// Replaces every quantized linear layer by its dense f32 form (more memory, f32 accuracy).
    pub fn dequantize_weights(&mut self) -> Result<()> {
        self.host_weights_mut()?.dequantize()?;
        self.info.weight_format = "f32".into();
        Ok(())
    }
}

/// Refuses, before anything changes, a dense matrix whose rows are not whole blocks.
fn check_blocks_fit(weights: &HostWeights, c: &LlamaConfig, scheme: QuantScheme) -> Result<()> {
    let dense_cols = weights
        .layers
        .iter()
        .flat_map(|l| l.matrices())
        .filter(|l| float_format(l))
        .map(|l| (scheme.quant, l.dims().1));
    let head = [
        (scheme.quant, c.hidden_size),
        (scheme.head(), c.hidden_size),
    ];
    for (quant, cols) in dense_cols.chain(head) {
        row_format(quant, cols, None)?;
    }
    Ok(())
}

fn is_float(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
}

/// Whether a matrix is stored as floats (a GGUF file's F16 tied head stays candle's F16 blocks).
fn float_format(l: &Linear) -> bool {
    match l {
        Linear::Dense(_) => true,
        Linear::Quantized { weight, .. } => is_float(weight.dtype()),
        Linear::Packed(_) => false,
    }
}

/// A float matrix's values; `None` for one already in a block format.
fn float_values(l: &Linear) -> Result<Option<Tensor>> {
    Ok(if float_format(l) {
        Some(l.dequantized()?)
    } else {
        None
    })
}

/// An embedding table's values when it is stored as floats.
fn float_table(e: &Embedding) -> Result<Option<Tensor>> {
    Ok(match e {
        Embedding::Dense(w) => Some(w.clone()),
        Embedding::Quantized(q) if is_float(q.dtype()) => Some(q.dequantize(&q.device())?),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LlamaConfig;
    use crate::init::random_model;
    use crate::kernels::{kernel_level, KernelLevel};
    use crate::sharing::SharingPlan;

    fn config(tied: bool) -> LlamaConfig {
        LlamaConfig {
            vocab_size: 300,
            hidden_size: 256,
            intermediate_size: 512,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 64,
            tie_word_embeddings: tied,
            rope_scaling: Default::default(),
        }
    }

    fn host(m: &EpasLlama) -> &HostWeights {
        m.host_weights().unwrap()
    }

    fn logits(model: &EpasLlama, tokens: &[u32]) -> Vec<Vec<f32>> {
        let plan = SharingPlan::none(model.config().num_layers);
        model
            .forward_sequence(tokens, plan)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
    }

    fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
    }

    /// Each format, tied and untied: every matrix changes format; the logits equal those of
    /// the same quantized values run dense (up to the kernels' 8-bit activations: the kernels
    /// serve the new blocks right), and stay near the original model's by the format's step (a
    /// matrix quantized into the wrong place would be far off). A tied table stays one table.
    #[test]
    fn quantized_weights_keep_the_dense_model_s_logits() {
        let tokens: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % 300).collect();
        let simd = kernel_level() != KernelLevel::Scalar;
        for tied in [true, false] {
            let dense = random_model(config(tied), None, 7).unwrap();
            let reference = logits(&dense, &tokens);
            let scale = reference
                .iter()
                .flatten()
                .fold(0f32, |m, &x| m.max(x.abs()));
            for (quant, format, tolerance) in [
                (GgufQuant::Q8_0, "q8_0", 0.04),
                (GgufQuant::Q6K, "q6k", 0.1),
                (GgufQuant::Q4K, "q4k", 0.35),
                (GgufQuant::Q4_1, "q4_1", 0.35),
            ] {
                let mut m = dense.clone();
                let changed = m.quantize_weights(quant, true).unwrap();
                assert_eq!(changed, 2 * 7 + if tied { 1 } else { 2 }, "{quant:?}");
                if simd || matches!(quant, GgufQuant::Q8_0 | GgufQuant::Q4_1) {
                    assert!(
                        matches!(host(&m).layers[1].down, Linear::Packed(_)),
                        "{quant:?}"
                    );
                    assert!(m.info.weight_format.starts_with(format), "{quant:?}");
                }
                if tied && simd {
                    assert!(matches!(host(&m).embed, Embedding::Packed(_)), "{quant:?}");
                }
                assert!(host(&m).bytes() < host(&dense).bytes(), "{quant:?}");
                let got = logits(&m, &tokens);

                let mut same_values = m.clone();
                same_values.dequantize_weights().unwrap();
                let exact = max_diff(&got, &logits(&same_values, &tokens));
                assert!(
                    exact <= 0.03 * scale,
                    "{quant:?} tied {tied}: {exact} from the same values run dense"
                );
                let worst = max_diff(&got, &reference);
                assert!(
                    worst <= tolerance * scale && worst > 0.0,
                    "{quant:?} tied {tied}: logits {worst} apart (largest {scale})"
                );
            }
        }
    }

    /// An F16 GGUF file loads its tied table as candle's F16 blocks: that table is quantized
    /// too (and packed once for the lookups and the LM head).
    #[test]
    fn a_float_table_in_gguf_blocks_is_quantized_too() {
        let mut m = random_model(config(true), None, 5).unwrap();
        let table = candle_core::quantized::QTensor::quantize(
            &host(&m).embed.dequantized().unwrap(),
            GgmlDType::F16,
        )
        .unwrap();
        let weights = m.host_weights_mut().unwrap();
        (weights.embed, weights.lm_head) =
            Embedding::Quantized(Arc::new(table)).tied(true).unwrap();
        assert!(matches!(host(&m).lm_head, Linear::Quantized { .. }));
        assert_eq!(m.quantize_weights(GgufQuant::Q8_0, true).unwrap(), 15);
        assert_eq!(host(&m).lm_head.format(), "q8_0");
        if kernel_level() != KernelLevel::Scalar {
            assert!(matches!(host(&m).embed, Embedding::Packed(_)));
        }
    }

    /// Under 6 bits the LM head and a tied table stay at Q6_K (Q8_0 where rows are not whole
    /// super-blocks), unless the scheme is pure; the layers take the format either way.
    #[test]
    fn the_lm_head_keeps_six_bits_unless_pure() {
        for (tied, hidden, pure, head) in [
            (true, 256, false, "q6k"),
            (false, 256, false, "q6k"),
            (true, 256, true, "q4_1"),
            (true, 64, false, "q8_0"),
        ] {
            let mut c = config(tied);
            c.hidden_size = hidden;
            c.num_heads = hidden / 64;
            c.num_kv_heads = 1;
            let mut m = random_model(c, None, 2).unwrap();
            let scheme = QuantScheme {
                quant: GgufQuant::Q4_1,
                pure,
            };
            m.quantize_weights(scheme, true).unwrap();
            if kernel_level() != KernelLevel::Scalar || head != "q6k" {
                assert_eq!(
                    host(&m).lm_head.format(),
                    head,
                    "tied {tied} hidden {hidden} pure {pure}"
                );
            }
            assert_eq!(host(&m).layers[0].gate.format(), "q4_1");
            if !tied {
                assert!(
                    matches!(host(&m).embed, Embedding::Quantized(ref q) if q.dtype() == GgmlDType::Q4_1)
                );
            }
        }
    }

    #[test]
    fn a_quantized_model_and_dense_formats_are_refused() {
        let mut m = random_model(config(true), None, 3).unwrap();
        for quant in [GgufQuant::F16, GgufQuant::F32] {
            let err = m.quantize_weights(quant, true).unwrap_err();
            assert!(matches!(err, ModelError::NotABlockFormat(_)), "{err}");
        }
        m.quantize_weights(GgufQuant::Q8_0, true).unwrap();
        let err = m.quantize_weights(GgufQuant::Q4_1, true).unwrap_err();
        assert!(err.to_string().contains("already stored as q8_0"), "{err}");
    }

    /// A matrix whose rows are not whole blocks (here only `ffn_down`, 80 wide) is a clear
    /// error before anything changes, not a panic or a half-quantized model.
    #[test]
    fn rows_that_do_not_fit_the_blocks_are_an_error() {
        let mut c = config(false);
        c.intermediate_size = 80;
        let mut m = random_model(c, None, 1).unwrap();
        let err = m.quantize_weights(GgufQuant::Q8_0, true).unwrap_err();
        assert!(err.to_string().contains("rows of 80 values"), "{err}");
        for l in &host(&m).layers {
            for w in [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down] {
                assert!(matches!(w, Linear::Dense(_)), "{}", w.format());
            }
        }
        assert!(matches!(host(&m).embed, Embedding::Dense(_)));
        assert_eq!(m.info.weight_format, "f32");
    }

    /// Bound for a device (no CPU rewrite), the blocks stay candle's in the chosen format.
    #[test]
    fn without_rewrites_the_blocks_stay_in_their_format() {
        let mut m = random_model(config(true), None, 4).unwrap();
        m.quantize_weights(GgufQuant::Q4K, false).unwrap();
        assert!(
            matches!(&host(&m).layers[0].up, Linear::Quantized { weight, .. } if weight.dtype() == GgmlDType::Q4K)
        );
        assert!(matches!(&host(&m).embed, Embedding::Quantized(q) if q.dtype() == GgmlDType::Q6K));
        assert_eq!(m.info.weight_format, "q4k");
    }
}
