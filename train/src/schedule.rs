//! The progressive sharing schedule (EPAS.md, Algorithm 1): every `interval` steps the next
//! `block` layers of the target set move into sharing mode, from the deep end toward the
//! shallow end, until the whole target set shares.

use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// Interval `I`, growth `B` and target set `S_c` (the deepest layers, shallow to deep).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressiveSchedule {
    pub num_layers: usize,
    pub interval: usize,
    pub block: usize,
    /// Target sharing layers `S_c`, ordered shallow to deep (the deepest `k` layers).
    pub target: Vec<usize>,
    /// The multi-block ablation: the target set is split into groups of `block` layers that each
    /// share from their own source (the layer just above the group) instead of one contiguous
    /// block sharing from one source.
    #[serde(default)]
    pub multi_block: bool,
}

impl ProgressiveSchedule {
    /// The schedule that grows to the deepest `target_layers` layers of `num_layers`.
    pub fn new(
        num_layers: usize,
        target_layers: usize,
        interval: usize,
        block: usize,
    ) -> Result<Self, TrainError> {
        if block < 1 {
            return Err(TrainError::Schedule(format!(
                "--block must be at least 1 (got {block})"
            )));
        }
        if target_layers < 1 {
            return Err(TrainError::Schedule(
                "the target sharing set is empty: the sharing ratio selects no layer \
                 (floor(ratio * layers) = 0); raise --sharing-ratio or pass --no-epas"
                    .into(),
            ));
        }
        if target_layers >= num_layers {
            return Err(TrainError::Schedule(format!(
                "{target_layers} sharing layers of {num_layers}: layer 0 never shares"
            )));
        }
        if !target_layers.is_multiple_of(block) {
            return Err(TrainError::Schedule(format!(
                "the target set has {target_layers} layers, not a multiple of --block {block}"
            )));
        }
        if interval < 1 {
            return Err(TrainError::Schedule(format!(
                "--interval must be at least 1 step (got {interval})"
            )));
        }
        Ok(Self {
            num_layers,
            interval,
            block,
            target: (num_layers - target_layers..num_layers).collect(),
            multi_block: false,
        })
    }

    /// Number of sharing layers at step `t`: `min(|S_c|, B * floor(t / I))`.
    pub fn sharing_layers_at(&self, step: usize) -> usize {
        (self.block * (step / self.interval)).min(self.target.len())
    }

    /// The sharing layers at step `t`, shallow to deep (always the deepest ones of `S_c`).
    pub fn sharing_set_at(&self, step: usize) -> Vec<usize> {
        let k = self.sharing_layers_at(step);
        self.target[self.target.len() - k..].to_vec()
    }

    /// First step at which the whole target set shares.
    pub fn full_at(&self) -> usize {
        self.interval * (self.target.len() / self.block)
    }

    /// Steps at which the sharing set grows (for the loss plot).
    pub fn switch_steps(&self, total_steps: usize) -> Vec<usize> {
        (1..=self.target.len() / self.block)
            .map(|i| i * self.interval)
            .filter(|&s| s < total_steps)
            .collect()
    }

    /// For each layer at step `t`: the layer whose Q/K (and attention probabilities) it uses —
    /// itself when it computes.
    pub fn sources_at(&self, step: usize) -> Vec<usize> {
        let sharing = self.sharing_set_at(step);
        let mut sources: Vec<usize> = (0..self.num_layers).collect();
        if sharing.is_empty() {
            return sources;
        }
        if self.multi_block {
            for group in sharing.chunks(self.block) {
                let src = group[0] - 1;
                for &l in group {
                    sources[l] = src;
                }
            }
        } else {
            let src = sharing[0] - 1;
            for &l in &sharing {
                sources[l] = src;
            }
        }
        sources
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_block_every_interval_up_to_the_target() {
        // (T, I, B, |S_c|) -> expected counts at every step.
        let s = ProgressiveSchedule::new(8, 4, 10, 1).unwrap();
        let counts: Vec<usize> = (0..60).map(|t| s.sharing_layers_at(t)).collect();
        for (t, &c) in counts.iter().enumerate() {
            assert_eq!(c, (t / 10).min(4), "step {t}");
        }
        assert_eq!(s.full_at(), 40);
        assert_eq!(s.switch_steps(60), vec![10, 20, 30, 40]);
        assert_eq!(s.switch_steps(25), vec![10, 20]);

        let s = ProgressiveSchedule::new(22, 6, 100, 2).unwrap();
        assert_eq!(s.sharing_layers_at(0), 0);
        assert_eq!(s.sharing_layers_at(99), 0);
        assert_eq!(s.sharing_layers_at(100), 2);
        assert_eq!(s.sharing_layers_at(250), 4);
        assert_eq!(s.sharing_layers_at(300), 6);
        assert_eq!(s.sharing_layers_at(10_000), 6);

        let s = ProgressiveSchedule::new(30, 15, 7, 5).unwrap();
        let expect = [
            (0, 0),
            (6, 0),
            (7, 5),
            (13, 5),
            (14, 10),
            (21, 15),
            (70, 15),
        ];
        for (t, k) in expect {
            assert_eq!(s.sharing_layers_at(t), k, "step {t}");
        }
    }

    #[test]
    fn grows_from_the_deep_end_and_includes_the_last_layer() {
        let s = ProgressiveSchedule::new(8, 4, 10, 1).unwrap();
        assert_eq!(s.target, vec![4, 5, 6, 7]);
        assert_eq!(s.sharing_set_at(5), Vec::<usize>::new());
        assert_eq!(s.sharing_set_at(10), vec![7]);
        assert_eq!(s.sharing_set_at(20), vec![6, 7]);
        assert_eq!(s.sharing_set_at(35), vec![5, 6, 7]);
        assert_eq!(s.sharing_set_at(99), vec![4, 5, 6, 7]);
        // One block shares from the last compute layer.
        assert_eq!(s.sources_at(20), vec![0, 1, 2, 3, 4, 5, 5, 5]);
        assert_eq!(s.sources_at(99), vec![0, 1, 2, 3, 3, 3, 3, 3]);
    }

    #[test]
    fn multi_block_variant_gives_each_group_its_own_source() {
        let mut s = ProgressiveSchedule::new(8, 4, 10, 2).unwrap();
        s.multi_block = true;
        assert_eq!(s.sources_at(10), vec![0, 1, 2, 3, 4, 5, 5, 5]);
        assert_eq!(s.sources_at(20), vec![0, 1, 2, 3, 3, 3, 5, 5]);
    }

    #[test]
    fn refuses_what_algorithm_1_asserts_against() {
        let err = |r: Result<ProgressiveSchedule, TrainError>| r.unwrap_err().to_string();
        assert!(err(ProgressiveSchedule::new(8, 4, 10, 0)).contains("--block"));
        assert!(err(ProgressiveSchedule::new(8, 0, 10, 1)).contains("empty"));
        assert!(err(ProgressiveSchedule::new(8, 3, 10, 2)).contains("multiple"));
        assert!(err(ProgressiveSchedule::new(8, 8, 10, 1)).contains("layer 0"));
        assert!(err(ProgressiveSchedule::new(8, 4, 0, 1)).contains("--interval"));
    }
}
