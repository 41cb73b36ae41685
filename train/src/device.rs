//! Where a training run computes: the CPU with this crate's fused ops (RMS norm, softmax and
//! cross-entropy with hand-written backward passes), or any candle device with candle's generic
//! differentiable ops, which is how training runs on CUDA (and, on the CPU, how that code path
//! is checked without a GPU).

use candle_core::{Device, Tensor};

#[derive(Debug, Clone)]
pub struct TrainDevice {
    device: Device,
    fused_host_ops: bool,
}

impl Default for TrainDevice {
    fn default() -> Self {
        Self::host()
    }
}

impl PartialEq for TrainDevice {
    fn eq(&self, other: &Self) -> bool {
        self.fused_host_ops == other.fused_host_ops && self.device.same_device(&other.device)
    }
}

impl TrainDevice {
    /// The CPU with the fused ops.
    pub fn host() -> Self {
        Self {
            device: Device::Cpu,
            fused_host_ops: true,
        }
    }

    /// `device` with candle's generic ops only.
    pub fn generic(device: Device) -> Self {
        Self {
            device,
            fused_host_ops: false,
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether the fused CPU ops run (else candle's generic ones).
    pub fn fused(&self) -> bool {
        self.fused_host_ops && self.device.is_cpu()
    }

    /// `t` on this device (a host tensor stays shared, not copied).
    pub fn put(&self, t: &Tensor) -> candle_core::Result<Tensor> {
        t.to_device(&self.device)
    }
}

impl std::fmt::Display for TrainDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.device, self.fused()) {
            (Device::Cpu, true) => f.write_str("cpu"),
            (Device::Cpu, false) => f.write_str("cpu (generic ops)"),
            (d, _) => write!(f, "{:?}", d.location()),
        }
    }
}
