//! `--device cpu|cuda[:N]`, shared by every command that runs the model.
//!
//! `cpu` runs this crate's SIMD kernels on host memory. `cuda[:N]` runs the model's tensor
//! forward on the GPU; a binary built without the `cuda` feature says so, and a missing driver
//! or a bad ordinal is reported as such.

use std::fmt;
use std::str::FromStr;

use anyhow::Context;
use candle_core::{DType, Device};
use clap::Args;
use epas_model::{DeviceWeights, EpasLlama};
use epas_train::TrainDevice;

use super::memory::{peak_rss_mb, release_freed_memory, rss_mb};

/// The device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// The GPU code path (tensor forward, device block pool) run on the CPU: slow, for checking
    /// that path on machines without a GPU.
    CpuTensor,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(Self::Cpu),
            "cpu-tensor" => Ok(Self::CpuTensor),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map(Self::Cuda)
                    .map_err(|_| format!("`{s}`: the CUDA ordinal must be a number, e.g. cuda:0")),
                None => Err(format!("`{s}`: expected cpu, cuda, cuda:N or cpu-tensor")),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::CpuTensor => f.write_str("cpu-tensor"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Element type of weights and activations on a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComputeDtype(pub DType);

impl FromStr for ComputeDtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f16" => Ok(Self(DType::F16)),
            "bf16" => Ok(Self(DType::BF16)),
            "f32" => Ok(Self(DType::F32)),
            other => Err(format!("`{other}`: expected f16, bf16 or f32")),
        }
    }
}

impl fmt::Display for ComputeDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_str())
    }
}

#[derive(Debug, Clone, Args)]
pub struct DeviceArgs {
    /// Where the model runs: `cpu` (this crate's SIMD kernels), `cuda[:N]` (the tensor forward
    /// on an NVIDIA GPU; needs a build with `--features cuda`), or `cpu-tensor` (the GPU code
    /// path on the CPU: slow, for checking it without a GPU).
    #[arg(long, env = "EPAS_DEVICE", default_value = "cpu")]
    pub device: DeviceSpec,
    /// Weights and activations on a GPU: `f16`, `bf16` or `f32` (quantized GGUF weights are
    /// dequantized to it once at load). Ignored on the CPU.
    #[arg(long, env = "EPAS_DEVICE_DTYPE", default_value = "f16")]
    pub device_dtype: ComputeDtype,
    /// Quantized (GGUF) matrices on a GPU: `dense` (dequantized to --device-dtype once; cuBLAS)
    /// or `quantized` (kept as GGUF blocks; candle's quantized kernels, less memory).
    #[arg(long, env = "EPAS_DEVICE_WEIGHTS", default_value = "dense")]
    pub device_weights: DeviceWeights,
}

impl DeviceArgs {
    /// The candle device the model runs on, or why it cannot be used.
    pub fn resolve(&self) -> anyhow::Result<Device> {
        match self.device {
            DeviceSpec::Cpu | DeviceSpec::CpuTensor => Ok(Device::Cpu),
            DeviceSpec::Cuda(ordinal) => cuda_device(ordinal),
        }
    }

    /// Where training computes: this crate's fused ops on `cpu`, candle's generic
    /// differentiable ops on `cuda` (and on `cpu-tensor`, to check that path on the CPU).
    /// Training is f32 everywhere; `--device-dtype` and `--device-weights` apply to inference.
    pub fn train_device(&self) -> anyhow::Result<TrainDevice> {
        Ok(match self.device {
            DeviceSpec::Cpu => TrainDevice::host(),
            DeviceSpec::CpuTensor | DeviceSpec::Cuda(_) => TrainDevice::generic(self.resolve()?),
        })
    }

    /// `model` (loaded on the host) as it runs on `device` (from [`Self::resolve`]): unchanged
    /// on `cpu`, its weights copied for the tensor forward otherwise.
    pub fn place(&self, model: EpasLlama, device: &Device) -> anyhow::Result<EpasLlama> {
        match self.device {
            DeviceSpec::Cpu => Ok(model),
            _ => self.on(model, device),
        }
    }

    /// `model` running the tensor forward on `device` (also on the CPU, for checks); its host
    /// weights are consumed as they are copied.
    pub fn on(&self, model: EpasLlama, device: &Device) -> anyhow::Result<EpasLlama> {
        let started = std::time::Instant::now();
        let model = model
            .on_device(device, self.device_dtype.0, self.device_weights)
            .with_context(|| format!("copying the weights to {}", self.device))?;
        // The host weights were freed as they were copied; main.rs keeps freed memory in the
        // heap, which would hold them as resident memory for the life of the process.
        release_freed_memory();
        tracing::info!(
            device = %self.device,
            dtype = %self.device_dtype,
            weights = %self.device_weights,
            rss_mb = rss_mb().unwrap_or(0.0).round(),
            peak_rss_mb = peak_rss_mb().unwrap_or(0.0).round(),
            seconds = started.elapsed().as_secs_f32(),
            "weights on the device"
        );
        Ok(model)
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(ordinal: usize) -> anyhow::Result<Device> {
    anyhow::bail!(
        "--device cuda:{ordinal}: this epas binary was built without the cuda feature \
         (build with `source scripts/setup-cuda.sh && cargo build --release --features cuda`)"
    )
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> anyhow::Result<Device> {
    Device::new_cuda(ordinal).map_err(|e| {
        // candle appends a backtrace to driver errors when RUST_BACKTRACE is set: first line only.
        let e = e.to_string();
        let e = e.lines().next().unwrap_or_default().to_string();
        anyhow::anyhow!(
            "--device cuda:{ordinal}: opening CUDA device {ordinal} (is the NVIDIA driver loaded?): {e}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_cuda_ordinals() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("CPU".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        assert_eq!("cpu-tensor".parse(), Ok(DeviceSpec::CpuTensor));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("metal".parse::<DeviceSpec>().is_err());
        assert_eq!(DeviceSpec::Cuda(1).to_string(), "cuda:1");
    }

    #[test]
    fn cpu_resolves_and_cuda_needs_the_feature() {
        let args = |device| DeviceArgs {
            device,
            device_dtype: ComputeDtype(DType::F16),
            device_weights: DeviceWeights::Dense,
        };
        assert!(args(DeviceSpec::Cpu).resolve().unwrap().is_cpu());
        if !cfg!(feature = "cuda") {
            let err = format!("{:#}", args(DeviceSpec::Cuda(0)).resolve().unwrap_err());
            assert!(err.contains("built without the cuda feature"), "{err}");
        }
    }

    #[test]
    fn parses_compute_dtypes() {
        assert_eq!("BF16".parse(), Ok(ComputeDtype(DType::BF16)));
        assert_eq!("f32".parse(), Ok(ComputeDtype(DType::F32)));
        assert!("q4".parse::<ComputeDtype>().is_err());
        assert_eq!(ComputeDtype(DType::F16).to_string(), "f16");
    }
}
