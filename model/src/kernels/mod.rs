//! CPU matrix kernels for quantized weights, selected at run time by CPU feature, each tested
//! against a scalar reference on random inputs.

mod matrix;
mod pool;
mod q4_1;
mod q8;
mod q8_0;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86_common;

pub use matrix::{BlockFormat, QuantMatrix};
pub use pool::{par_chunks_mut, SpinPool};
pub use q4_1::{Q41Matrix, Q41};
pub use q8::{quantize_q8_1, BlockQ8_1};
pub use q8_0::{Q80Matrix, Q80};

/// Which implementation the running CPU gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelLevel {
    /// AVX-512 VNNI on 256-bit registers (`vpdpbusd`).
    Avx512Vnni,
    /// AVX2 `vpmaddubsw`.
    Avx2,
    Scalar,
}

pub fn kernel_level() -> KernelLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::env::var_os("EPAS_KERNEL_SCALAR").is_some() {
            return KernelLevel::Scalar;
        }
        if is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
        {
            return KernelLevel::Avx512Vnni;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return KernelLevel::Avx2;
        }
    }
    KernelLevel::Scalar
}
