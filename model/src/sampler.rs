//! Picks the next token from logits: penalties and logit bias, then greedy or temperature with
//! top-k / top-p / min-p, from the sequence's own seeded random stream, so its output depends on
//! its seed and never on what else shares the batch.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Temperatures below this pick greedily, as vLLM's do: dividing logits by a smaller one
/// overflows them to infinity and turns every probability into NaN.
pub const GREEDY_BELOW_TEMPERATURE: f32 = 1e-5;

/// Sampling settings of one sequence (OpenAI's and vLLM's names).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Below [`GREEDY_BELOW_TEMPERATURE`] (0 included) means greedy.
    pub temperature: f32,
    /// 0 means no limit.
    pub top_k: usize,
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the top token's.
    pub min_p: f32,
    pub seed: u64,
    /// Subtracted once from every token already generated.
    pub presence_penalty: f32,
    /// Subtracted per occurrence in the generated tokens.
    pub frequency_penalty: f32,
    /// Divides positive (multiplies negative) logits of tokens in the prompt or output; 1 = off.
    pub repetition_penalty: f32,
    pub logit_bias: Vec<(u32, f32)>,
    /// Return the chosen token's log-probability and this many alternatives.
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            logit_bias: Vec::new(),
            logprobs: None,
        }
    }
}

/// A chosen token with its log-probability under the model and the top alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub token: u32,
    pub logprob: Option<f32>,
    pub top_logprobs: Vec<(u32, f32)>,
}

/// An output constraint as the sampler sees it.
pub trait TokenFilter {
    /// Whether `token` may come next.
    fn allows(&mut self, token: u32) -> Result<bool, String>;
    /// Every token that may come next: bit `t % 32` of word `t / 32` allows token `t`.
    fn allowed(&mut self) -> Result<&[u32], String>;
}

/// A sampler with its own random stream and the token counts its penalties need.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    generated: HashMap<u32, u32>,
    prompt: Vec<u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        Self::with_prompt(params, &[])
    }

    /// A sampler whose repetition penalty also covers `prompt`.
    pub fn with_prompt(params: SamplingParams, prompt: &[u32]) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        let mut prompt = if params.repetition_penalty != 1.0 {
            prompt.to_vec()
        } else {
            Vec::new()
        };
        prompt.sort_unstable();
        prompt.dedup();
        Self {
            params,
            rng,
            generated: HashMap::new(),
            prompt,
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks a token; `banned` tokens (e.g. EOS before `min_tokens`) are never chosen.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        self.sample_full(logits, &[]).token
    }

    pub fn sample_full(&mut self, raw: &[f32], banned: &[u32]) -> Sampled {
        let logits = self.adjusted(raw, banned);
        let token = self.choose(&logits);
        self.record(raw, token)
    }

    /// Picks a token that `filter` (an output constraint) allows, never a `banned` one, from
    /// the sampler's distribution restricted to the allowed tokens. Where restricting after
    /// drawing gives that same distribution (see [`Self::checks_after_drawing`]), the token is
    /// drawn from the whole distribution first and kept when the filter allows it, so the
    /// filter's full mask is built only for the tokens it refuses. Errs when no allowed token
    /// may be picked.
    pub fn sample_filtered(
        &mut self,
        raw: &[f32],
        banned: &[u32],
        filter: &mut dyn TokenFilter,
    ) -> Result<Sampled, String> {
        let mut logits = self.adjusted(raw, banned);
        if self.checks_after_drawing() {
            let token = self.choose(&logits);
            if logits[token as usize] > f32::NEG_INFINITY && filter.allows(token)? {
                return Ok(self.record(raw, token));
            }
        }
        let mask = filter.allowed()?;
        let mut any = false;
        for (t, l) in logits.iter_mut().enumerate() {
            let word = mask.get(t / 32).copied().unwrap_or(0);
            if word >> (t % 32) & 1 == 0 {
                *l = f32::NEG_INFINITY;
            }
            any |= *l > f32::NEG_INFINITY;
        }
        if !any {
            return Err(
                "the output constraint allows only tokens this request may not pick \
                        (banned, or EOS before min_tokens)"
                    .into(),
            );
        }
        let token = self.choose(&logits);
        Ok(self.record(raw, token))
    }

    /// Whether drawing from the whole distribution and keeping the draw only when a constraint
    /// allows it (drawing within the allowed tokens otherwise) gives exactly the distribution
    /// restricted to the allowed tokens: for greedy picks and plain temperature, but not when
    /// top-k, top-p or min-p truncate the distribution (they would truncate a different set).
    pub fn checks_after_drawing(&self) -> bool {
        self.is_greedy()
            || (self.params.top_k == 0 && self.params.top_p >= 1.0 && self.params.min_p <= 0.0)
    }

    fn choose(&mut self, logits: &[f32]) -> u32 {
        if self.is_greedy() {
            argmax(logits)
        } else {
            match self.distribution(logits) {
                Distribution::Certain(token) => token,
                Distribution::Weighted(weights) => self.pick(&weights),
            }
        }
    }

    /// `raw` after penalties, logit bias and bans.
    fn adjusted(&self, raw: &[f32], banned: &[u32]) -> Vec<f32> {
        let mut logits = raw.to_vec();
        self.apply_penalties(&mut logits);
        for &(id, bias) in &self.params.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
        for &id in banned {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        logits
    }

    /// Counts `token` for the penalties and reports it with its log-probabilities.
    fn record(&mut self, raw: &[f32], token: u32) -> Sampled {
        *self.generated.entry(token).or_insert(0) += 1;
        let (logprob, top_logprobs) = match self.params.logprobs {
            None => (None, Vec::new()),
            Some(n) => log_probs(raw, token, n),
        };
        Sampled {
            token,
            logprob,
            top_logprobs,
        }
    }

    fn is_greedy(&self) -> bool {
        let t = self.params.temperature;
        t.is_nan() || t < GREEDY_BELOW_TEMPERATURE
    }

    fn apply_penalties(&self, logits: &mut [f32]) {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let seen = self
                .prompt
                .iter()
                .chain(self.generated.keys())
                .copied()
                .collect::<std::collections::HashSet<u32>>();
            for id in seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&id, &count) in &self.generated {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l -= p.presence_penalty + p.frequency_penalty * count as f32;
                }
            }
        }
    }

    /// The distribution a draw picks from: `softmax(logits / T)` cut by top-k, min-p and top-p.
    /// Logits are shifted by the largest before they are scaled, so every weight lies in [0, 1]
    /// and the top one is 1: no overflow, no NaN.
    fn distribution(&self, logits: &[f32]) -> Distribution {
        // An infinite logit has all the probability.
        if logits.contains(&f32::INFINITY) {
            return Distribution::Certain(argmax(logits));
        }
        let mut cands: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, l))
            .collect();
        if cands.is_empty() {
            return Distribution::Certain(argmax(logits));
        }
        cands.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if self.params.top_k > 0 {
            cands.truncate(self.params.top_k);
        }
        let max = cands[0].1;
        let inv_t = 1.0 / self.params.temperature;
        for c in &mut cands {
            c.1 = ((c.1 - max) * inv_t).exp();
        }
        let total: f32 = cands.iter().map(|c| c.1).sum();
        cands.iter_mut().for_each(|c| c.1 /= total);
        if self.params.min_p > 0.0 {
            let floor = self.params.min_p * cands[0].1;
            let keep = cands.iter().take_while(|c| c.1 >= floor).count().max(1);
            cands.truncate(keep);
        }
        if self.params.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = cands
                .iter()
                .position(|c| {
                    acc += c.1;
                    acc >= self.params.top_p
                })
                .map_or(cands.len(), |i| i + 1);
            cands.truncate(keep);
        }
        Distribution::Weighted(cands)
    }

    /// Draws one token in proportion to the weights (which need not sum to 1).
    fn pick(&mut self, weights: &[(u32, f32)]) -> u32 {
        let total: f32 = weights.iter().map(|w| w.1).sum();
        let mut r = self.rng.random::<f32>() * total;
        for &(token, weight) in weights {
            if r < weight {
                return token;
            }
            r -= weight;
        }
        weights.last().map_or(0, |w| w.0)
    }
}

/// What a draw picks from.
enum Distribution {
    Certain(u32),
    /// Candidates, most likely first, with weights in proportion to their probability.
    Weighted(Vec<(u32, f32)>),
}

/// Log-probability of `token` and the `n` most likely tokens under `softmax(logits)`.
fn log_probs(logits: &[f32], token: u32, n: usize) -> (Option<f32>, Vec<(u32, f32)>) {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
    let chosen = logits.get(token as usize).map(|l| l - lse);
    let mut top: Vec<(u32, f32)> = Vec::new();
    if n > 0 {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let n = n.min(idx.len());
        idx.select_nth_unstable_by(n - 1, |a, b| {
            logits[*b as usize].total_cmp(&logits[*a as usize])
        });
        idx.truncate(n);
        idx.sort_by(|a, b| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        });
        top = idx
            .into_iter()
            .map(|i| (i, logits[i as usize] - lse))
            .collect();
    }
    (chosen, top)
}

/// Index of the largest logit; the lowest index wins ties and NaN never wins (0 when every
/// logit is NaN).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best: Option<usize> = None;
    for (i, &l) in logits.iter().enumerate() {
        if !l.is_nan() && best.is_none_or(|b| l > logits[b]) {
            best = Some(i);
        }
    }
    best.unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&[0.0, 0.5, 0.2]), 1);
    }

    #[test]
    fn same_seed_same_draws_and_top_k_is_respected() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 3,
            seed: 42,
            ..Default::default()
        };
        let draws = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone());
            (0..40).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        let a = draws(&params);
        assert_eq!(a, draws(&params));
        // The three highest logits are at indices 6, 13, 20 (value 1.8).
        assert!(a.iter().all(|t| [6, 13, 20].contains(t)));
        let other = draws(&SamplingParams { seed: 43, ..params });
        assert_ne!(a, other);
    }

    #[test]
    fn top_p_and_min_p_keep_the_dominant_token() {
        for params in [
            SamplingParams {
                temperature: 1.0,
                top_p: 0.5,
                seed: 1,
                ..Default::default()
            },
            SamplingParams {
                temperature: 1.0,
                min_p: 0.01,
                seed: 1,
                ..Default::default()
            },
        ] {
            let mut s = Sampler::new(params);
            for _ in 0..20 {
                assert_eq!(s.sample(&[10.0, 0.0, 0.0, 0.0]), 0);
            }
        }
    }

    #[test]
    fn penalties_bias_and_bans_change_the_choice() {
        let logits = [2.0, 1.9, 0.0];
        let mut s = Sampler::new(SamplingParams {
            presence_penalty: 0.5,
            ..Default::default()
        });
        assert_eq!(s.sample(&logits), 0);
        assert_eq!(
            s.sample(&logits),
            1,
            "token 0 is penalised after its first use"
        );
        let mut s = Sampler::new(SamplingParams {
            frequency_penalty: 0.06,
            ..Default::default()
        });
        assert_eq!(s.sample(&logits), 0);
        assert_eq!(s.sample(&logits), 0);
        assert_eq!(s.sample(&logits), 1, "two uses cost 0.12 > 0.1");
        let mut s = Sampler::with_prompt(
            SamplingParams {
                repetition_penalty: 1.2,
                ..Default::default()
            },
            &[0],
        );
        assert_eq!(s.sample(&logits), 1, "2.0 / 1.2 < 1.9");
        let mut s = Sampler::new(SamplingParams {
            logit_bias: vec![(2, 5.0)],
            ..Default::default()
        });
        assert_eq!(s.sample(&logits), 2);
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample_full(&logits, &[0]).token, 1);
    }

    /// Draws `rounds` tokens from `logits` with `params`, one fresh seed per round.
    fn picks(params: &SamplingParams, logits: &[f32], rounds: u64) -> Vec<u32> {
        (0..rounds)
            .map(|seed| {
                let mut s = Sampler::new(SamplingParams {
                    seed,
                    ..params.clone()
                });
                s.sample(logits)
            })
            .collect()
    }

    /// Asserts that every temperature picks `token` from `logits` under 20 seeds.
    fn always_picks(logits: &[f32], temperatures: &[f32], token: u32) {
        for &temperature in temperatures {
            let params = SamplingParams {
                temperature,
                ..Default::default()
            };
            assert_eq!(
                picks(&params, logits, 20),
                vec![token; 20],
                "temperature {temperature:e}"
            );
        }
    }

    #[test]
    fn temperatures_below_the_greedy_threshold_pick_the_argmax() {
        let tiny = [1e-38, 1e-39, 1e-6, f32::MIN_POSITIVE];
        always_picks(&[1.0, 5.0, 3.0, 4.999], &tiny, 1);
    }

    #[test]
    fn huge_logits_never_make_the_draw_non_finite() {
        // Scaled by 1/T these overflow to infinity; the draw must still favour the top one.
        always_picks(&[3.0e38, -3.0e38, 3.4e38, 1.0], &[0.5, 1.0, 2.0], 2);
    }

    #[test]
    fn one_finite_logit_among_negative_infinities_is_the_only_pick() {
        let mut logits = vec![f32::NEG_INFINITY; 8];
        logits[5] = -2.0;
        for params in [
            SamplingParams {
                temperature: 1.0,
                ..Default::default()
            },
            SamplingParams {
                temperature: 1.5,
                top_k: 3,
                top_p: 0.2,
                min_p: 0.5,
                ..Default::default()
            },
        ] {
            assert_eq!(picks(&params, &logits, 10), vec![5; 10]);
        }
        // The same when every other token is banned rather than -inf.
        let banned: Vec<u32> = (0..8).filter(|&t| t != 3).collect();
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            ..Default::default()
        });
        assert_eq!(s.sample_full(&[0.5; 8], &banned).token, 3);
    }

    #[test]
    fn a_positive_infinite_logit_is_certain_and_nan_is_never_picked() {
        always_picks(&[1.0, f32::INFINITY, 2.0, f32::NAN], &[0.0, 1.0], 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, 3.0, f32::NAN]), 2);
        let mut greedy = Sampler::new(SamplingParams::default());
        assert_eq!(greedy.sample(&[f32::NAN, 0.5, -1.0]), 1);
    }

    #[test]
    fn logprobs_are_normalised_and_ranked() {
        let logits = [1.0f32, 3.0, 2.0, -1.0];
        let mut s = Sampler::new(SamplingParams {
            logprobs: Some(2),
            ..Default::default()
        });
        let out = s.sample_full(&logits, &[]);
        assert_eq!(out.token, 1);
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        assert!((out.logprob.unwrap() - (3f32.exp() / z).ln()).abs() < 1e-5);
        assert_eq!(
            out.top_logprobs.iter().map(|t| t.0).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    /// A filter over a fixed set, counting how often its whole mask was asked for.
    struct SetFilter {
        mask: Vec<u32>,
        masks_built: usize,
    }

    impl TokenFilter for SetFilter {
        fn allows(&mut self, token: u32) -> Result<bool, String> {
            Ok(self.mask[token as usize / 32] >> (token % 32) & 1 == 1)
        }
        fn allowed(&mut self) -> Result<&[u32], String> {
            self.masks_built += 1;
            Ok(&self.mask)
        }
    }

    fn set(bits: u32) -> SetFilter {
        SetFilter {
            mask: vec![bits],
            masks_built: 0,
        }
    }

    #[test]
    fn only_allowed_tokens_are_picked() {
        let logits = [1.0f32, 5.0, 3.0, 4.0, 2.0];
        // Tokens 2 and 4 allowed.
        let mut greedy = Sampler::new(SamplingParams::default());
        let mut f = set(0b10100);
        assert_eq!(
            greedy.sample_filtered(&logits, &[], &mut f).unwrap().token,
            2
        );
        assert_eq!(
            greedy.sample_filtered(&logits, &[2], &mut f).unwrap().token,
            4
        );
        assert!(greedy.sample_filtered(&logits, &[2, 4], &mut f).is_err());
        // The argmax allowed: no mask built.
        let mut f = set(0b00010);
        assert_eq!(
            greedy.sample_filtered(&logits, &[], &mut f).unwrap().token,
            1
        );
        assert_eq!(f.masks_built, 0);
        for top_k in [0, 4] {
            for seed in 0..200 {
                let mut s = Sampler::new(SamplingParams {
                    temperature: 1.5,
                    top_k,
                    seed,
                    ..Default::default()
                });
                let t = s
                    .sample_filtered(&logits, &[], &mut set(0b10100))
                    .unwrap()
                    .token;
                assert!(t == 2 || t == 4, "{t}");
            }
        }
    }

    /// Drawing first and checking after gives the distribution restricted to the allowed
    /// tokens: chi-square against p(t) / p(allowed) over many seeds.
    #[test]
    fn checking_after_drawing_keeps_the_restricted_distribution() {
        let logits = [0.5f32, 2.0, 1.0, 1.5, 0.0, 1.2];
        let allowed = [0usize, 2, 3, 5];
        let bits = allowed.iter().fold(0u32, |b, &t| b | 1 << t);
        let temperature = 0.8f32;
        let p: Vec<f64> = logits
            .iter()
            .map(|&l| ((l / temperature) as f64).exp())
            .collect();
        let total: f64 = allowed.iter().map(|&t| p[t]).sum();
        let draws = 20_000;
        let mut counts = [0usize; 6];
        let mut masks_built = 0;
        for seed in 0..draws {
            let mut s = Sampler::new(SamplingParams {
                temperature,
                seed: seed as u64,
                ..Default::default()
            });
            let mut f = set(bits);
            counts[s.sample_filtered(&logits, &[], &mut f).unwrap().token as usize] += 1;
            masks_built += f.masks_built;
        }
        let chi2: f64 = allowed
            .iter()
            .map(|&t| {
                let expected = draws as f64 * p[t] / total;
                (counts[t] as f64 - expected).powi(2) / expected
            })
            .sum();
        // 3 degrees of freedom: p = 0.001 at 16.27.
        assert!(chi2 < 16.27, "chi2 {chi2}, counts {counts:?}");
        assert_eq!(counts[1] + counts[4], 0);
        assert!(masks_built > 0 && masks_built < draws, "{masks_built}");
    }
}
