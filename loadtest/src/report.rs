//! The report: settings, and per sweep point and ratio the summaries. Serialised as the
//! `--json` file; `--merge` reads such files back.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::args::{Config, PromptSpec, RequestBound};
use crate::error::{LoadtestError, Result};
use crate::load::Load;
use crate::outcome::Record;
use crate::runner::RunOutput;
use crate::spec::LengthSpec;
use crate::speculation::Speculation;
use crate::stats::{Slo, Summary};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    /// One per measuring invocation (several after `--merge`).
    pub sources: Vec<Source>,
    pub runs: Vec<RunReport>,
}

/// How a measuring invocation was set up.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Source {
    pub label: String,
    pub command: Vec<String>,
    pub url: String,
    pub model: String,
    pub endpoint: String,
    /// `synthetic`, `corpus PATH` or `lines PATH`.
    pub prompts: String,
    pub prompt_tokens: LengthSpec,
    pub max_tokens: LengthSpec,
    pub ignore_eos: bool,
    pub requests: Option<RequestBound>,
    pub duration_s: Option<f64>,
    pub timeout_s: f64,
    pub warmup: usize,
    pub seed: u64,
    pub slo: Slo,
    pub unix_time: u64,
}

/// One sweep point of one ratio run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    /// The `--label` of the invocation (by default the model name).
    pub label: String,
    pub load: Load,
    /// `[ratio, weight]` pairs sent; empty when no ratio was sent.
    pub ratio_mix: Vec<(f64, f64)>,
    pub interrupted: bool,
    pub overall: Summary,
    /// One row per ratio (one row with `sharing_ratio: null` when none was sent).
    pub by_ratio: Vec<RatioRow>,
    /// The first message of each error kind.
    pub error_examples: BTreeMap<String, String>,
    /// Draft and accepted tokens of speculative decoding during the run, from the server's
    /// counters; absent when the server has none (and in reports written before them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speculation: Option<Speculation>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RatioRow {
    pub sharing_ratio: Option<f64>,
    #[serde(flatten)]
    pub summary: Summary,
}

impl Source {
    pub fn new(config: &Config, model: &str) -> Source {
        Source {
            label: config.label.clone().unwrap_or_else(|| model.to_string()),
            command: std::env::args().collect(),
            url: config.base_url.clone(),
            model: model.to_string(),
            endpoint: config.endpoint.path().to_string(),
            prompts: match &config.prompts {
                PromptSpec::Synthetic => "synthetic".into(),
                PromptSpec::Corpus(p) => format!("corpus {}", p.display()),
                PromptSpec::Lines(p) => format!("lines {}", p.display()),
            },
            prompt_tokens: config.prompt_tokens,
            max_tokens: config.max_tokens,
            ignore_eos: config.ignore_eos,
            requests: config.requests,
            duration_s: config.duration.map(|d| d.as_secs_f64()),
            timeout_s: config.timeout.as_secs_f64(),
            warmup: config.warmup,
            seed: config.seed,
            slo: config.slo,
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}

impl RunReport {
    pub fn new(
        label: &str,
        load: Load,
        mix: &[(f64, f64)],
        output: &RunOutput,
        slo: &Slo,
        speculation: Option<Speculation>,
    ) -> RunReport {
        let all: Vec<&Record> = output.records.iter().collect();
        let ratios: Vec<Option<f64>> = if mix.is_empty() {
            vec![None]
        } else {
            mix.iter().map(|&(r, _)| Some(r)).collect()
        };
        let by_ratio = ratios
            .into_iter()
            .map(|ratio| {
                let mine: Vec<&Record> = all.iter().copied().filter(|r| r.ratio == ratio).collect();
                RatioRow {
                    sharing_ratio: ratio,
                    summary: Summary::of(&mine, output.duration, slo),
                }
            })
            .collect();
        let mut error_examples = BTreeMap::new();
        for r in &output.records {
            if let Err(f) = &r.result {
                error_examples
                    .entry(f.kind.key())
                    .or_insert_with(|| f.message.clone());
            }
        }
        RunReport {
            label: label.to_string(),
            load,
            ratio_mix: mix.to_vec(),
            interrupted: output.interrupted,
            overall: Summary::of(&all, output.duration, slo),
            by_ratio,
            error_examples,
            speculation,
        }
    }
}

impl Report {
    pub fn new(sources: Vec<Source>, runs: Vec<RunReport>) -> Report {
        Report {
            tool: "epas-loadtest".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            sources,
            runs,
        }
    }

    pub fn read(path: &Path) -> Result<Report> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadtestError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| LoadtestError::BadFile {
            path: path.into(),
            message: format!("not an epas-loadtest JSON report: {e}"),
        })
    }

    /// Several reports as one: their sources and runs in order.
    pub fn merge(reports: Vec<Report>) -> Report {
        let mut merged = Report::new(Vec::new(), Vec::new());
        for r in reports {
            merged.sources.extend(r.sources);
            merged.runs.extend(r.runs);
        }
        merged
    }

    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Whether any request of any run succeeded.
    pub fn any_completed(&self) -> bool {
        self.runs.iter().any(|r| r.overall.completed > 0)
    }
}
