//! The storage formats a model's matrices can be quantized to (`--quant`, `--quantize`), and
//! which format each matrix takes under a scheme (the LM-head rule).

use candle_core::quantized::GgmlDType;

/// Storage of the exported matrices (norms stay f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufQuant {
    F32,
    F16,
    Q8_0,
    Q5_1,
    Q5_0,
    Q4_1,
    Q4_0,
    /// Q4_K where a row holds whole 256-value super-blocks, else Q5_0 (llama.cpp's fallback).
    Q4K,
    /// Q5_K where a row holds whole 256-value super-blocks, else Q5_1 (llama.cpp's fallback).
    Q5K,
    /// Q6_K where a row holds whole 256-value super-blocks, else Q8_0 (llama.cpp's fallback).
    Q6K,
}

impl std::str::FromStr for GgufQuant {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "q8_0" => Ok(Self::Q8_0),
            "q5_1" => Ok(Self::Q5_1),
            "q5_0" => Ok(Self::Q5_0),
            "q4_1" => Ok(Self::Q4_1),
            "q4_0" => Ok(Self::Q4_0),
            "q4_k" | "q4k" => Ok(Self::Q4K),
            "q5_k" | "q5k" => Ok(Self::Q5K),
            "q6_k" | "q6k" => Ok(Self::Q6K),
            other => Err(format!(
                "unknown quantization {other:?} \
                 (q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1, q4_0, f16, f32)"
            )),
        }
    }
}

impl GgufQuant {
    /// The name `--quant` / `--quantize` take.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8_0 => "q8_0",
            Self::Q5_1 => "q5_1",
            Self::Q5_0 => "q5_0",
            Self::Q4_1 => "q4_1",
            Self::Q4_0 => "q4_0",
            Self::Q4K => "q4_k",
            Self::Q5K => "q5_k",
            Self::Q6K => "q6_k",
        }
    }

    /// The storage of a matrix whose rows hold `cols` values.
    pub(crate) fn dtype(self, cols: usize) -> GgmlDType {
        match self {
            Self::F32 => GgmlDType::F32,
            Self::F16 => GgmlDType::F16,
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q5_1 => GgmlDType::Q5_1,
            Self::Q5_0 => GgmlDType::Q5_0,
            Self::Q4_1 => GgmlDType::Q4_1,
            Self::Q4_0 => GgmlDType::Q4_0,
            Self::Q4K if cols.is_multiple_of(GgmlDType::Q4K.block_size()) => GgmlDType::Q4K,
            Self::Q4K => GgmlDType::Q5_0,
            Self::Q5K if cols.is_multiple_of(GgmlDType::Q5K.block_size()) => GgmlDType::Q5K,
            Self::Q5K => GgmlDType::Q5_1,
            Self::Q6K if cols.is_multiple_of(GgmlDType::Q6K.block_size()) => GgmlDType::Q6K,
            Self::Q6K => GgmlDType::Q8_0,
        }
    }

    /// llama.cpp's `general.file_type` (`LLAMA_FTYPE_*`).
    pub(crate) fn file_type(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q8_0 => 7,
            Self::Q5_0 => 8,
            Self::Q5_1 => 9,
            Self::Q5K => 16,
            Self::Q4K => 14,
            Self::Q6K => 18,
        }
    }
}

/// How a model's matrices are stored: each in `quant`, except that under formats of fewer than 6
/// bits the LM head (and an embedding table tied to it) is kept at Q6_K (Q8_0 where its rows are
/// not whole super-blocks), as llama.cpp's quantizer does: the logits are the most sensitive to
/// it. `pure` stores it like the rest (llama.cpp's `--pure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantScheme {
    pub quant: GgufQuant,
    pub pure: bool,
}

impl From<GgufQuant> for QuantScheme {
    fn from(quant: GgufQuant) -> Self {
        Self { quant, pure: false }
    }
}

/// A matrix's place in the model, which decides its storage under a [`QuantScheme`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A decoder layer's projection, or an embedding table apart from the LM head.
    Layer,
    /// The LM head, or an embedding table tied to it.
    Head,
}

impl Role {
    /// The embedding table's role: the LM head's when tied to it.
    pub(crate) fn table(tied: bool) -> Self {
        if tied {
            Self::Head
        } else {
            Self::Layer
        }
    }
}

impl QuantScheme {
    /// The storage of the LM head and of a tied embedding table.
    pub(crate) fn head(self) -> GgufQuant {
        use GgufQuant::*;
        match self.quant {
            F32 | F16 | Q8_0 | Q6K => self.quant,
            _ if self.pure => self.quant,
            _ => Q6K,
        }
    }

    /// The storage of a matrix in `role`.
    pub(crate) fn format_for(self, role: Role) -> GgufQuant {
        match role {
            Role::Layer => self.quant,
            Role::Head => self.head(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule the exporter and load-time quantization share: under 6 bits the LM head and a
    /// table tied to it take Q6_K unless the scheme is pure; an untied table is a layer.
    #[test]
    fn the_lm_head_and_a_tied_table_keep_six_bits_under_small_formats() {
        use GgufQuant::*;
        for (quant, pure, head) in [
            (Q4_1, false, Q6K),
            (Q4K, false, Q6K),
            (Q4_1, true, Q4_1),
            (Q8_0, false, Q8_0),
            (F16, false, F16),
        ] {
            let s = QuantScheme { quant, pure };
            assert_eq!(s.format_for(Role::Layer), quant);
            assert_eq!(s.format_for(Role::table(false)), quant);
            assert_eq!(s.format_for(Role::Head), head, "{quant:?} pure {pure}");
            assert_eq!(
                s.format_for(Role::table(true)),
                head,
                "{quant:?} pure {pure}"
            );
        }
    }
}
