//! The progressive sharing schedule (EPAS.md, Algorithm 1): every `interval` steps the next
//! `block` layers of the target set move into sharing mode, from the deep end toward the
//! shallow end, until the whole target set shares. The multi-block ablation spaces the target
//! set into groups of `block` layers, each below a computing layer of its own that is its
//! source. Flexible training samples a sharing depth up to the schedule's (see
//! [`ProgressiveSchedule::flexible_depth`]).

use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// Interval `I`, growth `B` and target set `S_c` (the deepest layers, shallow to deep).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressiveSchedule {
    pub num_layers: usize,
    pub interval: usize,
    pub block: usize,
    /// Target sharing layers `S_c`, ordered shallow to deep: the deepest `k` layers, or with
    /// `multi_block` `k / block` groups of `block` layers, each right below its source.
    pub target: Vec<usize>,
    /// The multi-block ablation (the paper's "groups of sharing layers"): groups of `block`
    /// layers separated by computing layers, each group sharing from the computing layer just
    /// above it, instead of one contiguous block sharing from one source.
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

    /// The multi-block layout of the same number of sharing layers: from the deep end, groups
    /// of `block` sharing layers, each below a computing source layer of its own.
    pub fn into_multi_block(mut self) -> Result<Self, TrainError> {
        let groups = self.target.len() / self.block;
        let needed = groups * (self.block + 1);
        if needed > self.num_layers {
            return Err(TrainError::Schedule(format!(
                "--multi-block needs {needed} layers for {groups} groups of {} sharing layers \
                 and their sources; the model has {}",
                self.block, self.num_layers
            )));
        }
        let mut target: Vec<usize> = (0..groups)
            .flat_map(|g| {
                let end = self.num_layers - g * (self.block + 1);
                end - self.block..end
            })
            .collect();
        target.sort_unstable();
        self.target = target;
        self.multi_block = true;
        Ok(self)
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
        self.sources_with(self.sharing_layers_at(step))
    }

    /// The sources when the deepest `depth` layers of the target set share (at most `|S_c|`;
    /// for multi-block, rounded down to whole groups).
    pub fn sources_with(&self, depth: usize) -> Vec<usize> {
        let unit = if self.multi_block { self.block } else { 1 };
        let depth = depth.min(self.target.len()) / unit * unit;
        let sharing = &self.target[self.target.len() - depth..];
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
            for &l in sharing {
                sources[l] = src;
            }
        }
        sources
    }

    /// The depths a flexible step may train at when the schedule shares `k` layers: every
    /// depth from 0 to `k` (multiples of `block` for multi-block, whose groups share whole).
    fn depths_up_to(&self, k: usize) -> Vec<usize> {
        let unit = if self.multi_block { self.block } else { 1 };
        (0..=k / unit).map(|i| i * unit).collect()
    }

    /// Flexible-ratio training: the sharing depth of micro-batch `micro` of step `step` when
    /// the schedule shares `k` layers: `k` itself half of the time, else uniform over the
    /// shallower depths (0 included), so every ratio up to the trained one keeps its Q/K
    /// projections in use while the trained depth keeps most of the updates. Drawn from
    /// `(seed, step, micro)` alone, so a resumed run draws the same depths.
    pub fn flexible_depth(&self, seed: u64, step: usize, micro: usize) -> usize {
        let k = self.sharing_layers_at(step);
        let depths = self.depths_up_to(k);
        let r = split_mix(seed ^ split_mix(step as u64 ^ split_mix(micro as u64)));
        if depths.len() < 2 || r & 1 == 0 {
            return k;
        }
        let shallower = &depths[..depths.len() - 1];
        shallower[((r >> 1) % shallower.len() as u64) as usize]
    }

    /// The depths validated at step `step` for the per-ratio curves: 0, the quarter points of
    /// the target set reached so far (multiples of `block` for multi-block), and the schedule's
    /// current depth.
    pub fn eval_depths(&self, step: usize) -> Vec<usize> {
        let k = self.sharing_layers_at(step);
        let unit = if self.multi_block { self.block } else { 1 };
        let target = self.target.len();
        let mut depths: Vec<usize> = [0, target / 4, target / 2, target * 3 / 4, target, k]
            .into_iter()
            .map(|d| d / unit * unit)
            .filter(|&d| d <= k)
            .collect();
        depths.sort_unstable();
        depths.dedup();
        depths
    }
}

/// SplitMix64's finaliser: a well-mixed 64-bit value of `x`.
fn split_mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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
    fn multi_block_groups_are_separated_by_their_computing_sources() {
        let s = ProgressiveSchedule::new(8, 4, 10, 2)
            .unwrap()
            .into_multi_block()
            .unwrap();
        assert_eq!(s.target, vec![3, 4, 6, 7]);
        assert_eq!(s.sources_at(10), vec![0, 1, 2, 3, 4, 5, 5, 5]);
        let full = s.sources_at(20);
        assert_eq!(full, vec![0, 1, 2, 2, 2, 5, 5, 5]);
        // Each group's source computes its own Q/K: it is not a sharing layer.
        for (l, &src) in full.iter().enumerate() {
            assert_eq!(
                full[src], src,
                "layer {l} shares from {src}, which shares too"
            );
        }
        let single = ProgressiveSchedule::new(8, 4, 10, 2).unwrap();
        assert_ne!(single.sources_at(20), full);
        // Three groups of two (the paper's ablation) in 12 layers: sources 3, 6 and 9.
        let s = ProgressiveSchedule::new(12, 6, 10, 2)
            .unwrap()
            .into_multi_block()
            .unwrap();
        assert_eq!(s.sources_at(30), vec![0, 1, 2, 3, 3, 3, 6, 6, 6, 9, 9, 9]);
        let err = ProgressiveSchedule::new(8, 6, 10, 2)
            .unwrap()
            .into_multi_block()
            .unwrap_err();
        assert!(err.to_string().contains("needs 9 layers"), "{err}");
    }

    #[test]
    fn flexible_depths_cover_every_depth_up_to_the_schedules_and_favour_it() {
        let s = ProgressiveSchedule::new(8, 4, 10, 1).unwrap();
        assert_eq!(s.flexible_depth(7, 5, 0), 0, "nothing shares yet");
        let draws: Vec<usize> = (0..400).map(|m| s.flexible_depth(7, 35, m)).collect();
        for d in 0..=3 {
            assert!(draws.contains(&d), "depth {d} never drawn");
        }
        assert!(draws.iter().all(|&d| d <= 3));
        let at_k = draws.iter().filter(|&&d| d == 3).count();
        assert!(
            (150..=250).contains(&at_k),
            "{at_k} of 400 at the schedule's depth"
        );
        assert_eq!(
            s.flexible_depth(7, 35, 3),
            s.flexible_depth(7, 35, 3),
            "drawn from the seed, the step and the micro-batch alone"
        );
        let m = ProgressiveSchedule::new(12, 6, 10, 2)
            .unwrap()
            .into_multi_block()
            .unwrap();
        assert!((0..200).all(|i| m.flexible_depth(1, 30, i).is_multiple_of(2)));
    }

    #[test]
    fn eval_depths_are_zero_the_quarter_points_reached_and_the_current_depth() {
        let s = ProgressiveSchedule::new(16, 8, 10, 1).unwrap();
        assert_eq!(s.eval_depths(0), vec![0]);
        assert_eq!(s.eval_depths(30), vec![0, 2, 3]);
        assert_eq!(s.eval_depths(100), vec![0, 2, 4, 6, 8]);
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
