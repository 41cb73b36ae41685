//! CPU matrix kernels for quantized weights, selected at run time by CPU feature, each tested
//! against a scalar reference on random inputs.

mod packed;
mod packed_matmul;
#[cfg(target_arch = "x86_64")]
mod packed_x86;
mod pool;
mod q8;
mod repack;
#[cfg(test)]
mod tests;

pub(crate) use packed::{PackedFormat, PackedMatrix};
pub(crate) use packed_matmul::{matmul_jobs, MatmulJob};
pub(crate) use pool::{par_chunks_mut, DisjointMut, SpinPool};
pub(crate) use q8::quantize_q8_1;
pub(crate) use repack::GgufBlocks;

/// Which implementation the running CPU gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KernelLevel {
    /// AVX-512 VNNI, 16 weight rows per 512-bit `vpdpbusd`.
    Avx512Vnni,
    /// AVX2 `vpmaddubsw`, the 16 rows as two halves.
    Avx2,
    Scalar,
}

/// The best level this CPU runs (`EPAS_KERNEL_SCALAR` forces the reference), detected once.
pub(crate) fn kernel_level() -> KernelLevel {
    static LEVEL: std::sync::OnceLock<KernelLevel> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(detect_level)
}

fn detect_level() -> KernelLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::env::var_os("EPAS_KERNEL_SCALAR").is_some() {
            return KernelLevel::Scalar;
        }
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return KernelLevel::Avx512Vnni;
        }
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return KernelLevel::Avx2;
        }
    }
    KernelLevel::Scalar
}
