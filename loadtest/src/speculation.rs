//! What speculative decoding did during a run, from the server's own counters
//! (`epas_spec_decode_{drafts,draft_tokens,accepted_tokens}_total`, labelled `sharing_ratio`)
//! read from its `/metrics` before and after the run. A server without `/metrics`, or without
//! those counters, reports nothing; reading them is never an error.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::prom_text;

/// The counters, in the order of a `Snapshot`'s arrays.
const COUNTERS: [&str; 3] = [
    "epas_spec_decode_drafts_total",
    "epas_spec_decode_draft_tokens_total",
    "epas_spec_decode_accepted_tokens_total",
];

/// One label's counts over a run, or a whole run's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpecCounts {
    /// Drafts checked (one per sequence and engine step that drafted).
    pub drafts: u64,
    /// Draft tokens proposed and checked.
    pub draft_tokens: u64,
    /// Draft tokens the model agreed with, i.e. kept.
    pub accepted_tokens: u64,
    /// `accepted_tokens / draft_tokens`; `None` when nothing was drafted.
    pub acceptance_rate: Option<f64>,
}

impl SpecCounts {
    /// From `[drafts, draft_tokens, accepted_tokens]`.
    pub(crate) fn from_array([drafts, draft_tokens, accepted_tokens]: [u64; 3]) -> SpecCounts {
        SpecCounts {
            drafts,
            draft_tokens,
            accepted_tokens,
            acceptance_rate: (draft_tokens > 0)
                .then(|| accepted_tokens as f64 / draft_tokens as f64),
        }
    }
}

/// A run's share of the server's counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Speculation {
    /// By the server's `sharing_ratio` label (the effective ratio with two decimals; `""` for
    /// a server that does not label them), only the labels the run moved.
    pub by_ratio: BTreeMap<String, SpecCounts>,
    pub overall: SpecCounts,
}

/// The counters at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Whether the page has the counters at all: epas creates them at its first draft, so a
    /// server with speculation on may have none yet.
    present: bool,
    by_ratio: BTreeMap<String, [u64; 3]>,
}

impl Snapshot {
    pub fn parse(page: &str) -> Snapshot {
        let mut snapshot = Snapshot {
            present: COUNTERS.iter().any(|c| prom_text::declares(page, c)),
            by_ratio: BTreeMap::new(),
        };
        for s in prom_text::samples(page) {
            let Some(which) = COUNTERS.iter().position(|c| *c == s.name) else {
                continue;
            };
            snapshot.present = true;
            if !(s.value.is_finite() && s.value >= 0.0) {
                continue;
            }
            let label = s.label("sharing_ratio").unwrap_or("").to_string();
            snapshot.by_ratio.entry(label).or_default()[which] += s.value.round() as u64;
        }
        snapshot
    }
}

impl Speculation {
    /// What the counters gained from `before` to `after`; `None` unless both pages were read
    /// and the later one has the counters. A label missing before counts from zero, and a
    /// counter that went down (the server restarted) counts from zero too.
    pub fn between(before: Option<&Snapshot>, after: Option<&Snapshot>) -> Option<Speculation> {
        let (before, after) = (before?, after?);
        if !after.present {
            return None;
        }
        let mut by_ratio = BTreeMap::new();
        let mut overall = [0u64; 3];
        for (label, now) in &after.by_ratio {
            let then = before.by_ratio.get(label).copied().unwrap_or_default();
            let gained: [u64; 3] = std::array::from_fn(|i| {
                if now[i] >= then[i] {
                    now[i] - then[i]
                } else {
                    now[i]
                }
            });
            if gained == [0; 3] {
                continue;
            }
            for (total, g) in overall.iter_mut().zip(gained) {
                *total += g;
            }
            by_ratio.insert(label.clone(), SpecCounts::from_array(gained));
        }
        Some(Speculation {
            by_ratio,
            overall: SpecCounts::from_array(overall),
        })
    }
}

/// Reads `GET {base_url}/metrics` within `limit`; `None` when there is no readable answer.
pub async fn scrape(
    http: &reqwest::Client,
    base_url: &str,
    api_key: Option<&str>,
    limit: Duration,
) -> Option<Snapshot> {
    let mut request = http.get(format!("{base_url}/metrics")).timeout(limit);
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let read = async {
        let response = request.send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    };
    // reqwest's timeout covers the body too; this is the backstop.
    let page = tokio::time::timeout(limit + Duration::from_secs(1), read)
        .await
        .ok()??;
    Some(Snapshot::parse(&page))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(drafts: u64, tokens: u64, accepted: u64, label: &str) -> String {
        format!(
            "# TYPE epas_spec_decode_drafts_total counter\n\
             epas_spec_decode_drafts_total{{sharing_ratio=\"{label}\"}} {drafts}\n\
             epas_spec_decode_draft_tokens_total{{sharing_ratio=\"{label}\"}} {tokens}\n\
             epas_spec_decode_accepted_tokens_total{{sharing_ratio=\"{label}\"}} {accepted}\n"
        )
    }

    #[test]
    fn counts_are_what_the_run_added_per_label_and_overall() {
        let before = Snapshot::parse(&(page(10, 40, 30, "0.00") + &page(1, 4, 0, "0.50")));
        let after = Snapshot::parse(
            &(page(20, 80, 50, "0.00") + &page(1, 4, 0, "0.50") + &page(5, 20, 15, "0.23")),
        );
        let s = Speculation::between(Some(&before), Some(&after)).unwrap();
        let zero = s.by_ratio["0.00"];
        assert_eq!(
            (zero.drafts, zero.draft_tokens, zero.accepted_tokens),
            (10, 40, 20)
        );
        assert_eq!(zero.acceptance_rate, Some(0.5));
        // A label new since the first page counts from zero; an unmoved one is left out.
        assert_eq!(s.by_ratio["0.23"].draft_tokens, 20);
        assert!(!s.by_ratio.contains_key("0.50"));
        assert_eq!(
            (
                s.overall.drafts,
                s.overall.draft_tokens,
                s.overall.accepted_tokens
            ),
            (15, 60, 35)
        );
        assert_eq!(s.overall.acceptance_rate, Some(35.0 / 60.0));
    }

    #[test]
    fn counters_created_during_the_run_or_reset_count_from_zero() {
        let empty = Snapshot::parse("epas_requests_running 0\n");
        let after = Snapshot::parse(&page(2, 8, 6, "0.00"));
        let s = Speculation::between(Some(&empty), Some(&after)).unwrap();
        assert_eq!(s.overall.accepted_tokens, 6);
        let restarted = Snapshot::parse(&page(1, 4, 1, "0.00"));
        let s = Speculation::between(Some(&after), Some(&restarted)).unwrap();
        assert_eq!(s.overall.draft_tokens, 4);
    }

    #[test]
    fn no_counters_or_no_page_reports_nothing() {
        let plain =
            Snapshot::parse("# TYPE epas_requests_running gauge\nepas_requests_running 0\n");
        assert_eq!(Speculation::between(Some(&plain), Some(&plain)), None);
        let spec = Snapshot::parse(&page(2, 8, 6, "0.00"));
        assert_eq!(Speculation::between(None, Some(&spec)), None);
        assert_eq!(Speculation::between(Some(&spec), None), None);
        // Counters that exist but did not move: a run that drafted nothing.
        let idle = Speculation::between(Some(&spec), Some(&spec)).unwrap();
        assert!(idle.by_ratio.is_empty());
        assert_eq!(idle.overall, SpecCounts::default());
        // Declared without samples still means the server has the counters.
        let declared =
            Snapshot::parse("# HELP epas_spec_decode_draft_tokens_total Draft tokens.\n");
        assert!(Speculation::between(Some(&plain), Some(&declared)).is_some());
    }

    #[test]
    fn unlabelled_and_unusable_samples() {
        let s = Snapshot::parse(
            "epas_spec_decode_draft_tokens_total 7\nepas_spec_decode_accepted_tokens_total 3\n\
             epas_spec_decode_drafts_total{sharing_ratio=\"0.00\"} NaN\n\
             epas_spec_decode_drafts_total{sharing_ratio=\"0.00\"} -1\n",
        );
        let got = Speculation::between(Some(&Snapshot::default()), Some(&s)).unwrap();
        assert_eq!(got.by_ratio[""].draft_tokens, 7);
        assert_eq!(got.by_ratio[""].acceptance_rate, Some(3.0 / 7.0));
        assert!(!got.by_ratio.contains_key("0.00"));
    }
}
