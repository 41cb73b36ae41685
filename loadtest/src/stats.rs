//! Percentiles, per-group summaries and goodput.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::outcome::{Record, Success};

/// The `p`-th percentile (0-100) of sorted values, interpolating linearly between the two
/// nearest ranks (numpy's default, which vLLM's `bench serve` reports): rank `p/100 * (n-1)`.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = (p / 100.0).clamp(0.0, 1.0) * last as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64))
}

/// Mean, p50/p90/p99 and max of a set of values, in milliseconds; empty sets give `None`s.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Dist {
    pub count: usize,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Dist {
    /// From values in seconds.
    pub fn from_seconds(values: impl IntoIterator<Item = f64>) -> Dist {
        let mut ms: Vec<f64> = values
            .into_iter()
            .map(|s| s * 1000.0)
            .filter(|v| v.is_finite())
            .collect();
        ms.sort_by(f64::total_cmp);
        let count = ms.len();
        let mean = (count > 0).then(|| ms.iter().sum::<f64>() / count as f64);
        Dist {
            count,
            mean,
            p50: percentile(&ms, 50.0),
            p90: percentile(&ms, 90.0),
            p99: percentile(&ms, 99.0),
            max: ms.last().copied(),
        }
    }
}

/// Service-level objectives for goodput; each is checked only when set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    /// Bound on a request's mean inter-token latency, i.e. its time per output token.
    pub itl_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
}

impl Slo {
    pub fn is_set(&self) -> bool {
        self.ttft_ms.is_some() || self.itl_ms.is_some() || self.e2e_ms.is_some()
    }

    /// Whether a finished request met every set objective. A request without text fails a
    /// TTFT objective; one with a single token has no inter-token gap and meets the ITL one.
    pub fn met(&self, s: &Success) -> bool {
        let ttft_ok = self
            .ttft_ms
            .is_none_or(|slo| s.ttft.is_some_and(|t| t * 1000.0 <= slo));
        let itl_ok = self
            .itl_ms
            .is_none_or(|slo| s.tpot().is_none_or(|t| t * 1000.0 <= slo));
        let e2e_ok = self.e2e_ms.is_none_or(|slo| s.e2e * 1000.0 <= slo);
        ttft_ok && itl_ok && e2e_ok
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Goodput {
    /// Requests that met every objective, per second of the run.
    pub requests_per_second: f64,
    /// Their share of all requests sent (failed ones count as missing the objectives).
    pub fraction: f64,
}

pub fn goodput(records: &[&Record], slo: &Slo, duration: f64) -> Option<Goodput> {
    if !slo.is_set() {
        return None;
    }
    let good = records
        .iter()
        .filter(|r| r.result.as_ref().is_ok_and(|s| slo.met(s)))
        .count();
    Some(Goodput {
        requests_per_second: rate(good as f64, duration),
        fraction: if records.is_empty() {
            0.0
        } else {
            good as f64 / records.len() as f64
        },
    })
}

fn rate(amount: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        amount / seconds
    } else {
        0.0
    }
}

/// Counts, throughput and latency of a group of requests over a run of `duration` seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub sent: usize,
    pub completed: usize,
    pub failed: usize,
    /// Failed requests by kind (`http_429`, `timeout`, `broken_stream`, ...).
    pub errors: BTreeMap<String, usize>,
    pub duration_s: f64,
    pub request_throughput: f64,
    pub output_throughput: f64,
    /// Prompt and output tokens of completed requests per second.
    pub total_throughput: f64,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    pub mean_prompt_tokens: Option<f64>,
    pub mean_output_tokens: Option<f64>,
    /// Completed requests whose token counts came from the server's `usage`.
    pub usage_reported: usize,
    pub ttft_ms: Dist,
    pub itl_ms: Dist,
    pub tpot_ms: Dist,
    pub e2e_ms: Dist,
    pub goodput: Option<Goodput>,
}

impl Summary {
    pub fn of(records: &[&Record], duration: f64, slo: &Slo) -> Summary {
        let ok: Vec<&Success> = records
            .iter()
            .filter_map(|r| r.result.as_ref().ok())
            .collect();
        let mut errors = BTreeMap::new();
        for r in records {
            if let Err(f) = &r.result {
                *errors.entry(f.kind.key()).or_insert(0) += 1;
            }
        }
        let prompt_tokens: u64 = ok.iter().map(|s| s.prompt_tokens).sum();
        let output_tokens: u64 = ok.iter().map(|s| s.output_tokens).sum();
        let mean = |total: u64| (!ok.is_empty()).then(|| total as f64 / ok.len() as f64);
        Summary {
            sent: records.len(),
            completed: ok.len(),
            failed: records.len() - ok.len(),
            errors,
            duration_s: duration,
            request_throughput: rate(ok.len() as f64, duration),
            output_throughput: rate(output_tokens as f64, duration),
            total_throughput: rate((prompt_tokens + output_tokens) as f64, duration),
            prompt_tokens,
            output_tokens,
            mean_prompt_tokens: mean(prompt_tokens),
            mean_output_tokens: mean(output_tokens),
            usage_reported: ok.iter().filter(|s| s.usage_reported).count(),
            ttft_ms: Dist::from_seconds(ok.iter().filter_map(|s| s.ttft)),
            itl_ms: Dist::from_seconds(ok.iter().flat_map(|s| s.itls.iter().copied())),
            tpot_ms: Dist::from_seconds(ok.iter().filter_map(|s| s.tpot())),
            e2e_ms: Dist::from_seconds(ok.iter().map(|s| s.e2e)),
            goodput: goodput(records, slo, duration),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{ErrorKind, Failure};

    #[test]
    fn percentiles_by_hand() {
        let v = [15.0, 20.0, 35.0, 40.0, 50.0];
        assert_eq!(percentile(&v, 0.0), Some(15.0));
        assert_eq!(percentile(&v, 50.0), Some(35.0));
        // rank 0.9 * 4 = 3.6: 40 + 0.6 * (50 - 40)
        assert!((percentile(&v, 90.0).unwrap() - 46.0).abs() < 1e-12);
        // rank 3.96: 40 + 0.96 * 10
        assert!((percentile(&v, 99.0).unwrap() - 49.6).abs() < 1e-12);
        assert_eq!(percentile(&v, 100.0), Some(50.0));
        let w = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&w, 50.0), Some(2.5));
        assert!((percentile(&w, 90.0).unwrap() - 3.7).abs() < 1e-12);
        assert!((percentile(&w, 99.0).unwrap() - 3.97).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn dist_converts_to_ms_and_sorts() {
        let d = Dist::from_seconds([0.004, 0.001, 0.003, 0.002]);
        assert_eq!(d.count, 4);
        assert!((d.mean.unwrap() - 2.5).abs() < 1e-9);
        assert!((d.p50.unwrap() - 2.5).abs() < 1e-9);
        assert!((d.max.unwrap() - 4.0).abs() < 1e-9);
        assert_eq!(Dist::from_seconds([]), Dist::default());
    }

    fn ok(ttft: f64, e2e: f64, tokens: u64) -> Record {
        Record {
            ratio: Some(0.5),
            sent_at: 0.0,
            finished_at: e2e,
            result: Ok(Success {
                ttft: Some(ttft),
                itls: vec![],
                e2e,
                output_tokens: tokens,
                prompt_tokens: 10,
                usage_reported: true,
            }),
        }
    }

    #[test]
    fn tpot_by_hand() {
        // 11 tokens, first at 0.2 s, last at 1.2 s: 1.0 s over 10 gaps.
        let s = ok(0.2, 1.2, 11).result.unwrap();
        assert!((s.tpot().unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(ok(0.2, 0.2, 1).result.unwrap().tpot(), None);
    }

    #[test]
    fn goodput_by_hand() {
        // Four requests over 2 s, SLO TTFT <= 300 ms and ITL (TPOT) <= 50 ms:
        //  a: ttft 0.1, tpot (1.1-0.1)/20 = 0.05  -> good (at the bound)
        //  b: ttft 0.4                            -> misses TTFT
        //  c: ttft 0.1, tpot (2.1-0.1)/20 = 0.1   -> misses ITL
        //  d: failed (429)                         -> not good
        // good = 1: 0.5 req/s, fraction 1/4.
        let failed = Record {
            ratio: Some(0.5),
            sent_at: 0.0,
            finished_at: 0.01,
            result: Err(Failure {
                kind: ErrorKind::Http(429),
                message: String::new(),
            }),
        };
        let rs = [ok(0.1, 1.1, 21), ok(0.4, 1.0, 21), ok(0.1, 2.1, 21), failed];
        let refs: Vec<&Record> = rs.iter().collect();
        let slo = Slo {
            ttft_ms: Some(300.0),
            itl_ms: Some(50.0),
            e2e_ms: None,
        };
        let g = goodput(&refs, &slo, 2.0).unwrap();
        assert_eq!(g.requests_per_second, 0.5);
        assert_eq!(g.fraction, 0.25);
        assert_eq!(goodput(&refs, &Slo::default(), 2.0), None);
        // Only an end-to-end bound of 1.05 s: a and c miss it, b meets it.
        let e2e = Slo {
            e2e_ms: Some(1050.0),
            ..Slo::default()
        };
        assert_eq!(goodput(&refs, &e2e, 2.0).unwrap().fraction, 0.25);

        let s = Summary::of(&refs, 2.0, &slo);
        assert_eq!((s.sent, s.completed, s.failed), (4, 3, 1));
        assert_eq!(s.errors.get("http_429"), Some(&1));
        assert_eq!(s.output_tokens, 63);
        assert_eq!(s.output_throughput, 31.5);
        assert_eq!(s.total_throughput, (63.0 + 30.0) / 2.0);
        assert_eq!(s.request_throughput, 1.5);
    }
}
