//! The sequence of requests of one run: prompt, `max_tokens` and sharing ratio of each,
//! drawn from a seeded generator so that the same flags give the same requests.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::prompts::{Prompt, PromptSource};
use crate::spec::LengthSpec;

pub struct RequestPlan {
    pub index: usize,
    pub prompt: Prompt,
    pub max_tokens: usize,
    /// `None`: send no sharing ratio.
    pub ratio: Option<f64>,
}

pub struct Workload {
    rng: StdRng,
    prompts: Arc<PromptSource>,
    prompt_tokens: LengthSpec,
    max_tokens: LengthSpec,
    /// Normalised weights; empty = no ratio.
    mix: Vec<(f64, f64)>,
    issued: usize,
    limit: Option<usize>,
}

impl Workload {
    pub fn new(
        seed: u64,
        prompts: Arc<PromptSource>,
        prompt_tokens: LengthSpec,
        max_tokens: LengthSpec,
        mix: Vec<(f64, f64)>,
        limit: Option<usize>,
    ) -> Self {
        Workload {
            rng: StdRng::seed_from_u64(seed),
            prompts,
            prompt_tokens,
            max_tokens,
            mix,
            issued: 0,
            limit,
        }
    }

    /// The next request, or `None` once `limit` requests were handed out.
    pub fn next_plan(&mut self) -> Option<RequestPlan> {
        if self.limit.is_some_and(|l| self.issued >= l) {
            return None;
        }
        let index = self.issued;
        self.issued += 1;
        let tokens = self.prompt_tokens.sample(&mut self.rng);
        let prompt = self.prompts.make(index, tokens, &mut self.rng);
        let max_tokens = self.max_tokens.sample(&mut self.rng);
        let ratio = pick_ratio(&self.mix, self.rng.random::<f64>());
        Some(RequestPlan {
            index,
            prompt,
            max_tokens,
            ratio,
        })
    }

    /// A generator for numbers drawn outside the request sequence (arrival gaps).
    pub fn fork_rng(&mut self) -> StdRng {
        StdRng::seed_from_u64(self.rng.random())
    }
}

/// The ratio whose cumulative weight interval holds `u` in `[0, 1)`.
pub fn pick_ratio(mix: &[(f64, f64)], u: f64) -> Option<f64> {
    let mut acc = 0.0;
    for &(ratio, weight) in mix {
        acc += weight;
        if u < acc {
            return Some(ratio);
        }
    }
    mix.last().map(|&(r, _)| r)
}

/// The seed of the run at sweep point `point` and ratio run `ratio_run`: distinct runs get
/// distinct prompts, so a server's prefix cache gains nothing from an earlier run.
pub fn run_seed(seed: u64, point: usize, ratio_run: usize) -> u64 {
    seed ^ ((point as u64) << 32 | ratio_run as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_choice_by_hand() {
        let mix = [(0.0, 0.25), (0.5, 0.75)];
        assert_eq!(pick_ratio(&mix, 0.0), Some(0.0));
        assert_eq!(pick_ratio(&mix, 0.2499), Some(0.0));
        assert_eq!(pick_ratio(&mix, 0.25), Some(0.5));
        assert_eq!(pick_ratio(&mix, 0.9999), Some(0.5));
        assert_eq!(pick_ratio(&[], 0.3), None);
    }

    #[test]
    fn same_seed_same_requests_and_the_limit_holds() {
        let make = |seed| {
            Workload::new(
                seed,
                Arc::new(PromptSource::Synthetic),
                LengthSpec::Uniform { min: 4, max: 9 },
                LengthSpec::Fixed { tokens: 16 },
                vec![(0.0, 0.5), (0.5, 0.5)],
                Some(200),
            )
        };
        let (mut a, mut b) = (make(1), make(1));
        let mut halves = [0, 0];
        for _ in 0..200 {
            let (x, y) = (a.next_plan().unwrap(), b.next_plan().unwrap());
            assert_eq!(x.prompt.text, y.prompt.text);
            assert_eq!(x.ratio, y.ratio);
            assert_eq!(x.max_tokens, 16);
            halves[(x.ratio == Some(0.5)) as usize] += 1;
        }
        assert!(a.next_plan().is_none());
        assert!(halves[0] > 70 && halves[1] > 70, "{halves:?}");
        assert_ne!(run_seed(0, 0, 1), run_seed(0, 1, 0));
    }
}
