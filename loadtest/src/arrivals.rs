//! Open-loop arrival times. Inter-arrival gaps are gamma-distributed with shape `burstiness`
//! and scale `1 / (rate * burstiness)`, as in vLLM's `bench serve`: the mean gap is always
//! `1 / rate`; burstiness 1 is a Poisson process (exponential gaps), below 1 is burstier
//! (coefficient of variation `1 / sqrt(burstiness)`), above 1 is more regular.

use rand::Rng;
use rand_distr::{Distribution, Gamma};

/// Shape and scale of the gap distribution for `rate` requests/s.
pub fn gamma_params(rate: f64, burstiness: f64) -> (f64, f64) {
    (burstiness, 1.0 / (rate * burstiness))
}

/// Mean and variance of the gap in seconds: `k * theta` and `k * theta^2`.
pub fn gap_mean_variance(rate: f64, burstiness: f64) -> (f64, f64) {
    let (k, theta) = gamma_params(rate, burstiness);
    (k * theta, k * theta * theta)
}

/// Yields gaps in seconds; an infinite rate yields zeros (every request at once).
pub struct Arrivals {
    gamma: Option<Gamma<f64>>,
}

impl Arrivals {
    /// `rate > 0` (or infinite) and finite `burstiness > 0`, which `args` has checked.
    pub fn new(rate: f64, burstiness: f64) -> Self {
        let gamma = if rate.is_infinite() {
            None
        } else {
            let (k, theta) = gamma_params(rate, burstiness);
            Gamma::new(k, theta).ok()
        };
        Arrivals { gamma }
    }

    pub fn next_gap(&self, rng: &mut impl Rng) -> f64 {
        match &self.gamma {
            Some(g) => g.sample(rng),
            None => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn parameters_by_hand() {
        // 4 req/s, burstiness 0.5: shape 0.5, scale 1/(4*0.5) = 0.5; mean 0.25 s,
        // variance 0.5 * 0.25 = 0.125 (Poisson at the same rate: 0.0625).
        assert_eq!(gamma_params(4.0, 0.5), (0.5, 0.5));
        assert_eq!(gap_mean_variance(4.0, 0.5), (0.25, 0.125));
        assert_eq!(gap_mean_variance(4.0, 1.0), (0.25, 0.0625));
        // 2 req/s, burstiness 4: shape 4, scale 0.125; variance 4/64 = 0.0625.
        assert_eq!(gamma_params(2.0, 4.0), (4.0, 0.125));
        assert_eq!(gap_mean_variance(2.0, 4.0), (0.5, 0.0625));
    }

    fn moments(rate: f64, burstiness: f64, n: usize) -> (f64, f64) {
        let arrivals = Arrivals::new(rate, burstiness);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let gaps: Vec<f64> = (0..n).map(|_| arrivals.next_gap(&mut rng)).collect();
        let mean = gaps.iter().sum::<f64>() / n as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n as f64;
        (mean, var)
    }

    #[test]
    fn samples_match_the_hand_computed_moments() {
        for (rate, b) in [(4.0, 0.5), (4.0, 1.0), (2.0, 4.0)] {
            let (mean, var) = moments(rate, b, 200_000);
            let (want_mean, want_var) = gap_mean_variance(rate, b);
            assert!((mean / want_mean - 1.0).abs() < 0.01, "{rate} {b}: {mean}");
            assert!((var / want_var - 1.0).abs() < 0.04, "{rate} {b}: {var}");
        }
    }

    #[test]
    fn poisson_counts_per_second() {
        // At 5 req/s the number of arrivals in each 1 s window is Poisson(5): mean 5, var 5.
        let arrivals = Arrivals::new(5.0, 1.0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let seconds = 20_000;
        let mut counts = vec![0u32; seconds];
        let mut t = 0.0;
        loop {
            t += arrivals.next_gap(&mut rng);
            if t >= seconds as f64 {
                break;
            }
            counts[t as usize] += 1;
        }
        let mean = counts.iter().map(|&c| c as f64).sum::<f64>() / seconds as f64;
        let var = counts
            .iter()
            .map(|&c| (c as f64 - mean).powi(2))
            .sum::<f64>()
            / seconds as f64;
        assert!((mean - 5.0).abs() < 0.1, "{mean}");
        assert!((var - 5.0).abs() < 0.25, "{var}");
    }

    #[test]
    fn infinite_rate_sends_at_once() {
        let arrivals = Arrivals::new(f64::INFINITY, 1.0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        assert_eq!(arrivals.next_gap(&mut rng), 0.0);
    }
}
