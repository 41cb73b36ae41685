//! AdamW with decoupled weight decay (matrices only), global-norm gradient clipping, and a state
//! that can be saved and restored exactly.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};

use crate::error::{TrainError, TrainResult};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// First and second moments of one parameter.
#[derive(Debug, Clone)]
struct Moments {
    m: Tensor,
    v: Tensor,
    /// Updates this parameter received (a sharing layer's Wq/Wk receives none while it shares).
    steps: u64,
}

#[derive(Debug)]
pub struct AdamW {
    pub config: AdamWConfig,
    moments: HashMap<String, Moments>,
}

/// A parameter with its gradient for one update.
pub struct Update<'a> {
    pub name: &'a str,
    pub var: &'a Var,
    pub grad: Option<Tensor>,
    pub decay: bool,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            moments: HashMap::new(),
        }
    }

    /// One update at learning rate `lr`. Parameters without a gradient are left untouched
    /// (no decay either: they took no part in the forward).
    pub fn step(&mut self, updates: &[Update<'_>], lr: f64) -> TrainResult<()> {
        let c = self.config;
        for u in updates {
            let Some(g) = &u.grad else { continue };
            let entry = match self.moments.get_mut(u.name) {
                Some(e) => e,
                None => {
                    let zeros = u.var.as_tensor().zeros_like()?;
                    self.moments.insert(
                        u.name.to_string(),
                        Moments {
                            m: zeros.clone(),
                            v: zeros,
                            steps: 0,
                        },
                    );
                    self.moments.get_mut(u.name).expect("just inserted")
                }
            };
            entry.steps += 1;
            let t = entry.steps as i32;
            entry.m = ((&entry.m * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            entry.v = ((&entry.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let m_hat = (&entry.m / (1.0 - c.beta1.powi(t)))?;
            let v_hat = (&entry.v / (1.0 - c.beta2.powi(t)))?;
            let step = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
            let w = u.var.as_tensor();
            let decayed = if u.decay && c.weight_decay > 0.0 {
                (w * (1.0 - lr * c.weight_decay))?
            } else {
                w.clone()
            };
            u.var.set(&(decayed - (step * lr)?)?)?;
        }
        Ok(())
    }

    /// The state as named tensors (`<name>.m`, `<name>.v`) plus per-parameter step counts.
    pub fn state(&self) -> (HashMap<String, Tensor>, HashMap<String, u64>) {
        let mut tensors = HashMap::new();
        let mut steps = HashMap::new();
        for (name, m) in &self.moments {
            tensors.insert(format!("{name}.m"), m.m.clone());
            tensors.insert(format!("{name}.v"), m.v.clone());
            steps.insert(name.clone(), m.steps);
        }
        (tensors, steps)
    }

    /// Restores a state written by [`Self::state`], its moments on `device`.
    pub fn restore(
        config: AdamWConfig,
        tensors: &HashMap<String, Tensor>,
        steps: &HashMap<String, u64>,
        device: &Device,
    ) -> TrainResult<Self> {
        let mut moments = HashMap::new();
        for (name, &count) in steps {
            let get = |suffix: &str| -> TrainResult<Tensor> {
                let t = tensors.get(&format!("{name}.{suffix}")).ok_or_else(|| {
                    TrainError::Checkpoint {
                        path: "optimizer.safetensors".into(),
                        message: format!("{name}.{suffix} is missing"),
                    }
                })?;
                Ok(t.to_device(device)?)
            };
            moments.insert(
                name.clone(),
                Moments {
                    m: get("m")?,
                    v: get("v")?,
                    steps: count,
                },
            );
        }
        Ok(Self { config, moments })
    }
}

/// Global L2 norm of `grads`.
pub fn global_norm(grads: &[Option<Tensor>]) -> TrainResult<f64> {
    let mut total = 0f64;
    for g in grads.iter().flatten() {
        total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok(total.sqrt())
}

/// Scales `grads` so their global norm is at most `max_norm`; returns the norm before clipping.
pub fn clip_global_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> TrainResult<f64> {
    let norm = global_norm(grads)?;
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.iter_mut().flatten() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}

/// Linear warmup to `peak`, then cosine decay to `peak * min_ratio` at `total` steps.
pub fn learning_rate(step: usize, total: usize, warmup: usize, peak: f64, min_ratio: f64) -> f64 {
    if warmup > 0 && step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup.min(step)) as f64 / span as f64).min(1.0);
    let min = peak * min_ratio;
    min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays_by_cosine() {
        let lr = |s| learning_rate(s, 110, 10, 1.0, 0.1);
        assert!((lr(0) - 0.1).abs() < 1e-12);
        assert!((lr(9) - 1.0).abs() < 1e-12);
        assert!((lr(10) - 1.0).abs() < 1e-12);
        assert!((lr(60) - 0.55).abs() < 1e-12);
        assert!((lr(110) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn one_adamw_step_matches_the_formula() {
        let var = Var::from_vec(vec![1.0f32, -2.0], 2, &Device::Cpu).unwrap();
        let grad = Tensor::new(&[0.5f32, -0.25], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(AdamWConfig {
            beta1: 0.9,
            beta2: 0.99,
            eps: 0.0,
            weight_decay: 0.1,
        });
        let updates = [Update {
            name: "w",
            var: &var,
            grad: Some(grad),
            decay: true,
        }];
        opt.step(&updates, 0.01).unwrap();
        // First step: m_hat = g, v_hat = g^2, so the step is sign(g).
        let w = var.as_tensor().to_vec1::<f32>().unwrap();
        assert!((w[0] - (1.0 * (1.0 - 0.001) - 0.01)).abs() < 1e-6, "{w:?}");
        assert!((w[1] - (-2.0 * (1.0 - 0.001) + 0.01)).abs() < 1e-6, "{w:?}");
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let a = Tensor::new(&[3.0f32, 0.0], &Device::Cpu).unwrap();
        let b = Tensor::new(&[4.0f32], &Device::Cpu).unwrap();
        let mut grads = vec![Some(a), None, Some(b)];
        let before = clip_global_norm(&mut grads, 1.0).unwrap();
        assert!((before - 5.0).abs() < 1e-6);
        assert!((global_norm(&grads).unwrap() - 1.0).abs() < 1e-4);
    }
}
