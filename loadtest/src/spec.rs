//! Parsers for the compound flag values: length distributions, ratio mixes, sweep lists.
//! Every parser returns a message that names the bad part, never panics on user input.

use rand::Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// A token count drawn per request: `128`, `uniform:64:256` or `normal:128:32`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LengthSpec {
    Fixed { tokens: usize },
    Uniform { min: usize, max: usize },
    Normal { mean: f64, sd: f64 },
}

impl LengthSpec {
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.trim().split(':').collect();
        let count = |s: &str| -> Result<usize, String> {
            s.trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| format!("{s:?} in {text:?} is not a token count >= 1"))
        };
        let real = |s: &str| -> Result<f64, String> {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("{s:?} in {text:?} is not a finite number >= 0"))
        };
        match parts.as_slice() {
            [n] => Ok(LengthSpec::Fixed { tokens: count(n)? }),
            ["uniform", a, b] => {
                let (min, max) = (count(a)?, count(b)?);
                if min > max {
                    return Err(format!("{text:?}: the minimum is above the maximum"));
                }
                Ok(LengthSpec::Uniform { min, max })
            }
            ["normal", m, s] => {
                let mean = real(m)?;
                if mean < 1.0 {
                    return Err(format!("{text:?}: the mean must be at least 1"));
                }
                Ok(LengthSpec::Normal { mean, sd: real(s)? })
            }
            _ => Err(format!(
                "{text:?} is not a length: use N, uniform:MIN:MAX or normal:MEAN:SD"
            )),
        }
    }

    /// One draw, at least 1 (a normal draw is rounded and clamped).
    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        match *self {
            LengthSpec::Fixed { tokens } => tokens,
            LengthSpec::Uniform { min, max } => rng.random_range(min..=max),
            LengthSpec::Normal { mean, sd } => match Normal::new(mean, sd) {
                Ok(d) => d.sample(rng).round().max(1.0) as usize,
                Err(_) => mean.round().max(1.0) as usize,
            },
        }
    }

    pub fn mean(&self) -> f64 {
        match *self {
            LengthSpec::Fixed { tokens } => tokens as f64,
            LengthSpec::Uniform { min, max } => (min + max) as f64 / 2.0,
            LengthSpec::Normal { mean, .. } => mean,
        }
    }
}

impl std::fmt::Display for LengthSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LengthSpec::Fixed { tokens } => write!(f, "{tokens}"),
            LengthSpec::Uniform { min, max } => write!(f, "uniform:{min}:{max}"),
            LengthSpec::Normal { mean, sd } => write!(f, "normal:{mean}:{sd}"),
        }
    }
}

/// A sharing ratio as the user wrote it: finite and `>= 0` (the server checks the maximum).
pub fn parse_ratio(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r >= 0.0)
        .ok_or_else(|| format!("{text:?} is not a sharing ratio (a finite number >= 0)"))
}

/// `0.5` or `0:0.5,0.5:0.5` (ratio:weight, weight 1 when left out) into normalised weights.
pub fn parse_ratio_mix(text: &str) -> Result<Vec<(f64, f64)>, String> {
    let mut mix: Vec<(f64, f64)> = Vec::new();
    for entry in text.split(',') {
        let (ratio, weight) = match entry.split_once(':') {
            Some((r, w)) => {
                let weight = w
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|w| w.is_finite() && *w > 0.0)
                    .ok_or_else(|| format!("{w:?} in {text:?} is not a weight > 0"))?;
                (parse_ratio(r)?, weight)
            }
            None => (parse_ratio(entry)?, 1.0),
        };
        if mix.iter().any(|&(r, _)| r == ratio) {
            return Err(format!("ratio {ratio} appears twice in {text:?}"));
        }
        mix.push((ratio, weight));
    }
    let total: f64 = mix.iter().map(|&(_, w)| w).sum();
    Ok(mix.into_iter().map(|(r, w)| (r, w / total)).collect())
}

pub fn parse_ratio_list(text: &str) -> Result<Vec<f64>, String> {
    let list = text
        .split(',')
        .map(parse_ratio)
        .collect::<Result<Vec<_>, _>>()?;
    for (i, r) in list.iter().enumerate() {
        if list[..i].contains(r) {
            return Err(format!("ratio {r} appears twice in {text:?}"));
        }
    }
    Ok(list)
}

pub fn parse_concurrency_list(text: &str) -> Result<Vec<usize>, String> {
    text.split(',')
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .ok()
                .filter(|&c| c >= 1)
                .ok_or_else(|| format!("{s:?} is not a concurrency (a whole number >= 1)"))
        })
        .collect()
}

/// Request rates in requests per second, `> 0`; `inf` sends every request at once.
pub fn parse_rate_list(text: &str) -> Result<Vec<f64>, String> {
    text.split(',')
        .map(|s| {
            let s = s.trim();
            if s.eq_ignore_ascii_case("inf") {
                return Ok(f64::INFINITY);
            }
            s.parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && *r > 0.0)
                .ok_or_else(|| format!("{s:?} is not a request rate (a number > 0, or inf)"))
        })
        .collect()
}

/// What `--sweep` varies: `concurrency=1,4,16` or `rate=0.5,1,2`.
#[derive(Clone, Debug, PartialEq)]
pub enum SweepSpec {
    Concurrency(Vec<usize>),
    Rate(Vec<f64>),
}

impl SweepSpec {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once('=') {
            Some(("concurrency", list)) => {
                Ok(SweepSpec::Concurrency(parse_concurrency_list(list)?))
            }
            Some(("rate", list)) => Ok(SweepSpec::Rate(parse_rate_list(list)?)),
            _ => Err(format!(
                "{text:?} is not a sweep: use concurrency=1,4,16 or rate=0.5,1,2"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_parse_and_reject() {
        assert_eq!(
            LengthSpec::parse("128"),
            Ok(LengthSpec::Fixed { tokens: 128 })
        );
        assert_eq!(
            LengthSpec::parse("uniform:64:256"),
            Ok(LengthSpec::Uniform { min: 64, max: 256 })
        );
        assert_eq!(
            LengthSpec::parse("normal:128:32"),
            Ok(LengthSpec::Normal {
                mean: 128.0,
                sd: 32.0
            })
        );
        for bad in [
            "0",
            "-3",
            "abc",
            "uniform:9:3",
            "normal:1",
            "normal:x:1",
            "",
        ] {
            assert!(LengthSpec::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(LengthSpec::parse("uniform:64:256").unwrap().mean(), 160.0);
    }

    #[test]
    fn length_draws_stay_in_range() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let u = LengthSpec::Uniform { min: 3, max: 5 };
        let n = LengthSpec::Normal {
            mean: 2.0,
            sd: 10.0,
        };
        for _ in 0..1000 {
            assert!((3..=5).contains(&u.sample(&mut rng)));
            assert!(n.sample(&mut rng) >= 1);
        }
    }

    #[test]
    fn ratio_mixes_normalise_weights() {
        assert_eq!(parse_ratio_mix("0.5"), Ok(vec![(0.5, 1.0)]));
        assert_eq!(
            parse_ratio_mix("0:1,0.5:3"),
            Ok(vec![(0.0, 0.25), (0.5, 0.75)])
        );
        assert_eq!(parse_ratio_mix("0,0.5"), Ok(vec![(0.0, 0.5), (0.5, 0.5)]));
        for bad in ["", "x", "-1", "0:0", "0:-1", "0.5,0.5", "nan", "inf"] {
            assert!(parse_ratio_mix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sweeps_parse() {
        assert_eq!(
            SweepSpec::parse("concurrency=1,4,16"),
            Ok(SweepSpec::Concurrency(vec![1, 4, 16]))
        );
        assert_eq!(
            SweepSpec::parse("rate=0.5,inf"),
            Ok(SweepSpec::Rate(vec![0.5, f64::INFINITY]))
        );
        for bad in ["1,4", "concurrency=0", "rate=0", "rate=-1", "speed=1"] {
            assert!(SweepSpec::parse(bad).is_err(), "{bad}");
        }
    }

    use rand::SeedableRng;
}
