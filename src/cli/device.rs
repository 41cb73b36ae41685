//! `--device cpu|cuda[:N]`, shared by every command that runs the model.
//!
//! Only `cpu` runs today. `cuda[:N]` is parsed everywhere; a binary built without the `cuda`
//! feature says so, and one built with it opens the device (so a missing driver or a bad
//! ordinal is reported as such) and then refuses, because the forward pass is host-only code.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use clap::Args;

/// The device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map(Self::Cuda)
                    .map_err(|_| format!("`{s}`: the CUDA ordinal must be a number, e.g. cuda:0")),
                None => Err(format!("`{s}`: expected cpu, cuda or cuda:N")),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DeviceArgs {
    /// Where the model runs: `cpu`, or `cuda[:N]` (needs a build with `--features cuda`; the
    /// forward pass does not run on CUDA yet, so `cuda` is refused with the reason).
    #[arg(long, env = "EPAS_DEVICE", default_value = "cpu")]
    pub device: DeviceSpec,
}

impl DeviceArgs {
    /// The candle device to load the model on, or why it cannot be used.
    pub fn resolve(&self) -> anyhow::Result<Device> {
        match self.device {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(ordinal) => cuda_device(ordinal),
        }
    }
}

/// What keeps the EPAS forward pass on the host (named in the error for `--device cuda`).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub const CUDA_MISSING: &str = "the EPAS forward pass runs on the CPU only: the decoder step \
(model/src/model.rs) copies activations to host vectors, attention (model/src/attention.rs) \
and the paged KV cache (model/src/paged) are host-memory code, and the Q4_1/Q8_0 matmuls use \
this crate's x86 SIMD kernels (model/src/kernels); GPU serving is not implemented yet (issue 9)";

#[cfg(not(feature = "cuda"))]
fn cuda_device(ordinal: usize) -> anyhow::Result<Device> {
    anyhow::bail!(
        "--device cuda:{ordinal}: this epas binary was built without the cuda feature \
         (build with `source scripts/setup-cuda.sh && cargo build --release --features cuda`)"
    )
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> anyhow::Result<Device> {
    let device = Device::new_cuda(ordinal).map_err(|e| {
        // candle appends a backtrace to driver errors when RUST_BACKTRACE is set: first line only.
        let e = e.to_string();
        let e = e.lines().next().unwrap_or_default().to_string();
        anyhow::anyhow!(
            "--device cuda:{ordinal}: opening CUDA device {ordinal} (is the NVIDIA driver loaded?): {e}"
        )
    })?;
    drop(device);
    anyhow::bail!("--device cuda:{ordinal}: CUDA device {ordinal} opened, but {CUDA_MISSING}")
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
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("metal".parse::<DeviceSpec>().is_err());
        assert_eq!(DeviceSpec::Cuda(1).to_string(), "cuda:1");
    }

    #[test]
    fn cpu_resolves_and_cuda_is_refused_with_the_reason() {
        let cpu = DeviceArgs {
            device: DeviceSpec::Cpu,
        };
        assert!(cpu.resolve().unwrap().is_cpu());
        let cuda = DeviceArgs {
            device: DeviceSpec::Cuda(0),
        };
        let err = format!("{:#}", cuda.resolve().unwrap_err());
        if cfg!(feature = "cuda") {
            assert!(err.contains("cuda:0"), "{err}");
        } else {
            assert!(err.contains("built without the cuda feature"), "{err}");
        }
    }
}
