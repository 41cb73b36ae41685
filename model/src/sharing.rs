//! Which layers of a request share attention activations, derived from its sharing ratio.

use crate::error::{ModelError, Result};

/// Mode of one decoder layer for one sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerMode {
    /// An ordinary LLaMA layer: projects Q, K and V.
    Compute,
    /// Reuses Q/K (and the attention probabilities) of the source layer; projects only V.
    Share,
}

/// The sharing plan of one sequence: the deepest `k = floor(ratio * L)` layers share the Q/K of
/// the source layer `L - k - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SharingPlan {
    num_layers: usize,
    sharing_layers: usize,
}

impl SharingPlan {
    /// The largest ratio any model accepts: all layers but layer 0 may share.
    pub fn max_ratio_for(num_layers: usize) -> f64 {
        if num_layers == 0 {
            0.0
        } else {
            (num_layers - 1) as f64 / num_layers as f64
        }
    }

    /// Plan for `ratio` on a model of `num_layers` layers. The ratio must be finite, non-negative
    /// and at most `(L - 1) / L` (layer 0 never shares).
    pub fn new(num_layers: usize, ratio: f64) -> Result<Self> {
        if num_layers == 0 {
            return Err(ModelError::NoLayers(num_layers));
        }
        if !ratio.is_finite() {
            return Err(ModelError::RatioNotFinite(ratio));
        }
        if ratio < 0.0 {
            return Err(ModelError::RatioNegative(ratio));
        }
        let max = Self::max_ratio_for(num_layers);
        // A tiny tolerance so that e.g. 29/30 written as 0.9666666666666667 is accepted.
        if ratio > max + 1e-12 {
            return Err(ModelError::RatioAboveMax {
                ratio,
                max,
                reason: "layer 0 never shares".into(),
            });
        }
        let k = ((ratio * num_layers as f64) + 1e-9).floor() as usize;
        Self::with_sharing_layers(num_layers, k.min(num_layers - 1))
    }

    /// Plan with exactly `k` sharing layers.
    pub fn with_sharing_layers(num_layers: usize, k: usize) -> Result<Self> {
        if num_layers == 0 {
            return Err(ModelError::NoLayers(num_layers));
        }
        if k >= num_layers {
            return Err(ModelError::RatioAboveMax {
                ratio: k as f64 / num_layers as f64,
                max: Self::max_ratio_for(num_layers),
                reason: format!("{k} sharing layers of {num_layers}: layer 0 never shares"),
            });
        }
        Ok(Self {
            num_layers,
            sharing_layers: k,
        })
    }

    /// The plan in which every layer computes.
    pub fn none(num_layers: usize) -> Self {
        Self {
            num_layers,
            sharing_layers: 0,
        }
    }

    pub fn num_layers(&self) -> usize {
        self.num_layers
    }

    /// Number of sharing layers `k`.
    pub fn sharing_layers(&self) -> usize {
        self.sharing_layers
    }

    /// The effective ratio `k / L`.
    pub fn effective_ratio(&self) -> f64 {
        self.sharing_layers as f64 / self.num_layers as f64
    }

    /// The last compute layer, whose Q/K the sharing block reuses; `None` when nothing shares.
    pub fn source_layer(&self) -> Option<usize> {
        (self.sharing_layers > 0).then(|| self.num_layers - self.sharing_layers - 1)
    }

    /// Index of the first sharing layer (`L` when none share).
    pub fn first_sharing_layer(&self) -> usize {
        self.num_layers - self.sharing_layers
    }

    pub fn mode(&self, layer: usize) -> LayerMode {
        if layer >= self.first_sharing_layer() {
            LayerMode::Share
        } else {
            LayerMode::Compute
        }
    }

    pub fn computes(&self, layer: usize) -> bool {
        self.mode(layer) == LayerMode::Compute
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_to_layers_matches_the_paper() {
        // TinyLlama, 22 layers: 25% = 5 layers, 50% = 11 layers.
        assert_eq!(SharingPlan::new(22, 0.25).unwrap().sharing_layers(), 5);
        assert_eq!(SharingPlan::new(22, 0.5).unwrap().sharing_layers(), 11);
        // SmolLM2, 30 layers.
        assert_eq!(SharingPlan::new(30, 0.25).unwrap().sharing_layers(), 7);
        assert_eq!(SharingPlan::new(30, 0.5).unwrap().sharing_layers(), 15);
        assert_eq!(SharingPlan::new(30, 0.0).unwrap().sharing_layers(), 0);
        let p = SharingPlan::new(30, 0.5).unwrap();
        assert_eq!(p.source_layer(), Some(14));
        assert!(p.computes(14));
        assert!(!p.computes(15));
        assert!(!p.computes(29));
        assert_eq!(SharingPlan::new(30, 0.0).unwrap().source_layer(), None);
    }

    #[test]
    fn maximum_ratio_keeps_layer_zero() {
        let max = SharingPlan::max_ratio_for(30);
        let p = SharingPlan::new(30, max).unwrap();
        assert_eq!(p.sharing_layers(), 29);
        assert_eq!(p.source_layer(), Some(0));
    }

    #[test]
    fn bad_ratios_are_typed_errors() {
        assert!(matches!(
            SharingPlan::new(30, f64::NAN),
            Err(ModelError::RatioNotFinite(_))
        ));
        assert!(matches!(
            SharingPlan::new(30, f64::INFINITY),
            Err(ModelError::RatioNotFinite(_))
        ));
        assert!(matches!(
            SharingPlan::new(30, -0.1),
            Err(ModelError::RatioNegative(_))
        ));
        assert!(matches!(
            SharingPlan::new(30, 1.0),
            Err(ModelError::RatioAboveMax { .. })
        ));
        assert!(matches!(
            SharingPlan::new(0, 0.0),
            Err(ModelError::NoLayers(0))
        ));
        assert!(SharingPlan::with_sharing_layers(30, 30).is_err());
    }
}
