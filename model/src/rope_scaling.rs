//! RoPE frequency scaling: how a long-context checkpoint stretches the rotary frequencies it was
//! pretrained with. Applied where the inverse frequencies are computed ([`crate::rope`]), so the
//! host forward, the device forward and the trainer all rotate with the same table.

use serde::{Deserialize, Serialize};

/// Llama 3.1's frequency-dependent scaling (HF `rope_type: "llama3"`): wavelengths shorter than
/// `original_max_position_embeddings / high_freq_factor` are kept, those longer than
/// `original_max_position_embeddings / low_freq_factor` divided by `factor`, and those between
/// interpolated smoothly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// How the inverse frequencies `theta^(-2i/head_dim)` are scaled.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RopeScaling {
    #[default]
    None,
    /// Positions divided by `factor` (HF `rope_type: "linear"`, GGUF `rope.scaling.type linear`).
    Linear {
        factor: f64,
    },
    Llama3(Llama3Scaling),
    /// One divisor per frequency, as a GGUF `rope_freqs` tensor holds them, where they are not
    /// the Llama-3 form (which loads as [`RopeScaling::Llama3`]).
    Frequencies {
        factors: Vec<f32>,
    },
}

impl RopeScaling {
    pub fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }

    /// Why the parameters cannot scale `head_dim / 2` frequencies, if they cannot.
    pub fn problem(&self, head_dim: usize) -> Option<String> {
        let positive = |name: &str, v: f64| {
            (!(v.is_finite() && v > 0.0))
                .then(|| format!("RoPE scaling {name} {v} must be a positive number"))
        };
        match self {
            Self::None => None,
            Self::Linear { factor } => positive("factor", *factor),
            Self::Llama3(p) => positive("factor", p.factor)
                .or_else(|| positive("low_freq_factor", p.low_freq_factor))
                .or_else(|| positive("high_freq_factor", p.high_freq_factor))
                .or_else(|| {
                    (p.high_freq_factor <= p.low_freq_factor).then(|| {
                        format!(
                            "RoPE scaling high_freq_factor {} must exceed low_freq_factor {}",
                            p.high_freq_factor, p.low_freq_factor
                        )
                    })
                })
                .or_else(|| {
                    (p.original_max_position_embeddings == 0).then(|| {
                        "RoPE scaling original_max_position_embeddings must be positive".into()
                    })
                }),
            Self::Frequencies { factors } => {
                if factors.len() != head_dim / 2 {
                    return Some(format!(
                        "{} RoPE frequency factors for {} frequencies",
                        factors.len(),
                        head_dim / 2
                    ));
                }
                factors
                    .iter()
                    .find_map(|&f| positive("frequency factor", f as f64))
            }
        }
    }

    /// `inv_freq` (the unscaled `theta^(-2i/head_dim)`) scaled. No scaling returns it unchanged.
    pub fn apply(&self, inv_freq: &[f32]) -> Vec<f32> {
        match self {
            Self::None => inv_freq.to_vec(),
            Self::Linear { factor } => inv_freq
                .iter()
                .map(|&w| (w as f64 / factor) as f32)
                .collect(),
            Self::Llama3(p) => inv_freq
                .iter()
                .map(|&w| (w as f64 / p.divisor(w as f64)) as f32)
                .collect(),
            Self::Frequencies { factors } => inv_freq
                .iter()
                .zip(factors)
                .map(|(&w, &f)| (w as f64 / f as f64) as f32)
                .collect(),
        }
    }
}

impl Llama3Scaling {
    /// What the frequency `inv_freq` is divided by: 1 for short wavelengths, `factor` for long
    /// ones, in between `1 / ((1 - s) / factor + s)` with `s` running from 0 to 1 across the band
    /// (llama.cpp's `rope_freqs` values).
    pub fn divisor(&self, inv_freq: f64) -> f64 {
        let wavelen = 2.0 * std::f64::consts::PI / inv_freq;
        let context = self.original_max_position_embeddings as f64;
        if wavelen < context / self.high_freq_factor {
            1.0
        } else if wavelen > context / self.low_freq_factor {
            self.factor
        } else {
            let smooth = (context / wavelen - self.low_freq_factor)
                / (self.high_freq_factor - self.low_freq_factor);
            1.0 / ((1.0 - smooth) / self.factor + smooth)
        }
    }

    /// The divisors of `inv_freq`, as a GGUF `rope_freqs` tensor stores them.
    pub fn frequency_factors(&self, inv_freq: &[f32]) -> Vec<f32> {
        inv_freq
            .iter()
            .map(|&w| self.divisor(w as f64) as f32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama3() -> Llama3Scaling {
        Llama3Scaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        }
    }

    #[test]
    fn llama3_keeps_short_wavelengths_divides_long_ones_and_is_continuous_between() {
        let p = llama3();
        let inv = |wavelen: f64| 2.0 * std::f64::consts::PI / wavelen;
        assert_eq!(p.divisor(inv(100.0)), 1.0);
        assert_eq!(p.divisor(inv(10_000.0)), 8.0);
        // The band edges (2048 and 8192) meet the constant parts.
        assert!((p.divisor(inv(2048.0)) - 1.0).abs() < 1e-12);
        assert!((p.divisor(inv(8192.0)) - 8.0).abs() < 1e-9);
        let mid = p.divisor(inv(4096.0));
        assert!(mid > 1.0 && mid < 8.0, "{mid}");
    }

    #[test]
    fn no_scaling_is_the_identity_and_linear_divides_every_frequency() {
        let inv = [1.0f32, 0.1, 0.01];
        assert_eq!(RopeScaling::None.apply(&inv), inv.to_vec());
        let linear = RopeScaling::Linear { factor: 4.0 }.apply(&inv);
        assert_eq!(linear, vec![0.25, 0.025, 0.0025]);
    }

    #[test]
    fn training_checkpoints_keep_the_scaling_and_older_ones_read_as_none() {
        for scaling in [
            RopeScaling::None,
            RopeScaling::Linear { factor: 2.0 },
            RopeScaling::Llama3(llama3()),
            RopeScaling::Frequencies {
                factors: vec![1.0, 2.5],
            },
        ] {
            let json = serde_json::to_string(&scaling).unwrap();
            assert_eq!(serde_json::from_str::<RopeScaling>(&json).unwrap(), scaling);
        }
        let old = r#"{"vocab_size": 8, "hidden_size": 8, "intermediate_size": 8, "num_layers": 1,
            "num_heads": 2, "num_kv_heads": 2, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 16, "tie_word_embeddings": true}"#;
        let c: crate::config::LlamaConfig = serde_json::from_str(old).unwrap();
        assert_eq!(c.rope_scaling, RopeScaling::None);
    }

    #[test]
    fn bad_parameters_are_named() {
        let mut p = llama3();
        p.high_freq_factor = 0.5;
        let e = RopeScaling::Llama3(p).problem(16).unwrap();
        assert!(e.contains("high_freq_factor"), "{e}");
        let e = RopeScaling::Linear { factor: 0.0 }.problem(16).unwrap();
        assert!(e.contains("factor 0"), "{e}");
        let short = RopeScaling::Frequencies {
            factors: vec![1.0; 3],
        };
        assert!(short
            .problem(16)
            .unwrap()
            .contains("3 RoPE frequency factors"));
        assert!(RopeScaling::Llama3(llama3()).problem(16).is_none());
    }
}
