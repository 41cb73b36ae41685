//! Command-line flags and their checked form, `Config`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::error::{LoadtestError, Result};
use crate::load::Load;
use crate::spec::{self, LengthSpec, SweepSpec};
use crate::stats::Slo;

/// Load generator for OpenAI-compatible servers (streaming /v1/completions or
/// /v1/chat/completions), with EPAS sharing-ratio control.
///
/// Closed loop (`--concurrency N`) or open loop (`--rate R`, Poisson or gamma with
/// `--burstiness`), swept with `--sweep concurrency=1,4,16` or `--sweep rate=1,2,4`; every
/// point is bounded by `--requests` / `--requests-per-client` and `--duration` (100 requests
/// when none is given), every request by `--timeout`.
#[derive(Parser, Debug)]
#[command(name = "epas-loadtest", version)]
pub struct Args {
    /// Base URL of the server (plain http), a trailing `/v1` is accepted.
    #[arg(
        long,
        env = "EPAS_LOADTEST_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// The `model` to request; by default the first id of GET /v1/models.
    #[arg(long)]
    pub model: Option<String>,
    /// Bearer key sent as `Authorization: Bearer KEY`.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[arg(long, value_enum, default_value = "completions")]
    pub endpoint: Endpoint,

    /// Closed loop: N clients, each sending its next request when its last ends (a list,
    /// `1,4,16`, is a sweep). The default when no `--rate` is given: 1.
    #[arg(long)]
    pub concurrency: Option<String>,
    /// Open loop: requests per second (`inf` = all at once; a list is a sweep).
    #[arg(long)]
    pub rate: Option<String>,
    /// Shape of the gamma-distributed gaps of the open loop: 1 = Poisson, below 1 burstier.
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Open loop: at most this many requests in flight (later arrivals wait).
    #[arg(long)]
    pub max_concurrency: Option<usize>,
    /// The sweep: `concurrency=1,4,16` or `rate=0.5,1,2,inf`.
    #[arg(long)]
    pub sweep: Option<String>,

    /// Requests per sweep point (and per swept ratio).
    #[arg(long, conflicts_with = "requests_per_client")]
    pub requests: Option<usize>,
    /// Closed loop: requests per client per point (concurrency x N in all).
    #[arg(long)]
    pub requests_per_client: Option<usize>,
    /// Seconds per point after which no new request is sent (running ones finish).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds a request may take from sending to its last byte.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// Requests sent one at a time before measuring, not counted.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,

    /// Prompt length in tokens, approximated in words (see the README's "Load testing"):
    /// `128`, `uniform:64:256` or `normal:128:32`. Default 128.
    #[arg(long)]
    pub prompt_tokens: Option<String>,
    /// Cut prompts from this text file or folder of text files instead of synthetic words.
    #[arg(long, conflicts_with = "prompts")]
    pub corpus: Option<PathBuf>,
    /// Use the lines of this file as prompts, in order; in a `.jsonl` file each line is one
    /// JSON string (so a prompt can hold newlines).
    #[arg(long, conflicts_with = "prompt_tokens")]
    pub prompts: Option<PathBuf>,
    /// `max_tokens` of each request: `128`, `uniform:MIN:MAX` or `normal:MEAN:SD`.
    #[arg(long, default_value = "128")]
    pub max_tokens: String,
    /// Send `ignore_eos: true` (vLLM, llama.cpp and epas honour it) so every request
    /// generates `max_tokens`.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Send `min_tokens: N` (vLLM's extension).
    #[arg(long)]
    pub min_tokens: Option<u32>,
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,

    /// Sharing ratio of every request (`0.5`), or a weighted mix (`0:0.5,0.5:0.5`, reported
    /// per ratio). Without it no `sharing_ratio` is sent.
    #[arg(long)]
    pub ratios: Option<String>,
    /// One run per ratio at every sweep point, interleaved, reported side by side.
    #[arg(long, conflicts_with = "ratios")]
    pub ratio_sweep: Option<String>,
    /// Ask for the ratio with the model alias `MODEL@R` instead of the `sharing_ratio` field.
    #[arg(long)]
    pub ratio_in_model: bool,
    /// Do not send `stream_options: {"include_usage": true}` (then tokens = text chunks).
    #[arg(long)]
    pub no_stream_usage: bool,
    /// A JSON object merged into every request body, e.g. '{"top_k": 1}'.
    #[arg(long)]
    pub extra_body: Option<String>,

    /// Goodput objective: time to first token, milliseconds.
    #[arg(long)]
    pub slo_ttft_ms: Option<f64>,
    /// Goodput objective: a request's mean inter-token latency (its TPOT), milliseconds.
    #[arg(long)]
    pub slo_itl_ms: Option<f64>,
    /// Goodput objective: end-to-end latency, milliseconds.
    #[arg(long)]
    pub slo_e2e_ms: Option<f64>,

    /// Seed of prompts, lengths, ratio choices and arrival times.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Name of this run in reports and charts (e.g. the server's name).
    #[arg(long)]
    pub label: Option<String>,
    /// Write the report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the report as Markdown tables.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Write a PNG chart of throughput and latency per sweep point and ratio.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Send nothing: read these JSON reports (comma-separated) and write them together to the
    /// terminal, --json, --markdown and --plot.
    #[arg(long, value_delimiter = ',')]
    pub merge: Vec<PathBuf>,
    /// No progress line (it is shown only when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// POST /v1/completions with `prompt`.
    Completions,
    /// POST /v1/chat/completions with one user message.
    Chat,
}

impl Endpoint {
    pub fn path(&self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }
}

#[derive(Clone, Debug)]
pub enum PromptSpec {
    Synthetic,
    Corpus(PathBuf),
    Lines(PathBuf),
}

/// When a point stops sending.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum RequestBound {
    Total(usize),
    PerClient(usize),
}

/// The checked configuration of a measuring run.
#[derive(Clone, Debug)]
pub struct Config {
    pub base_url: String,
    pub model: Option<String>,
    pub api_key: Option<String>,
    pub endpoint: Endpoint,
    pub loads: Vec<Load>,
    /// One entry per run at each point: a weighted ratio mix, empty = send no ratio.
    pub ratio_runs: Vec<Vec<(f64, f64)>>,
    pub requests: Option<RequestBound>,
    pub duration: Option<Duration>,
    pub timeout: Duration,
    pub warmup: usize,
    pub prompt_tokens: LengthSpec,
    pub prompts: PromptSpec,
    pub max_tokens: LengthSpec,
    pub ignore_eos: bool,
    pub min_tokens: Option<u32>,
    pub temperature: f64,
    pub ratio_in_model: bool,
    pub stream_usage: bool,
    pub extra_body: serde_json::Map<String, serde_json::Value>,
    pub slo: Slo,
    pub seed: u64,
    pub label: Option<String>,
    pub progress: bool,
}

/// Requests per point when no bound at all is given.
pub const DEFAULT_REQUESTS: usize = 100;

fn usage(message: String) -> LoadtestError {
    LoadtestError::Usage(message)
}

fn positive(name: &str, v: Option<f64>) -> Result<Option<f64>> {
    match v {
        Some(x) if !(x.is_finite() && x > 0.0) => Err(usage(format!(
            "--{name} must be a finite number > 0, not {x}"
        ))),
        _ => Ok(v),
    }
}

impl Args {
    pub fn config(&self) -> Result<Config> {
        let base_url = normalise_url(&self.url)?;
        let loads = self.loads()?;
        let open = matches!(loads[0], Load::Open { .. });
        let ratio_runs = match (&self.ratios, &self.ratio_sweep) {
            (Some(mix), _) => vec![spec::parse_ratio_mix(mix).map_err(usage)?],
            (None, Some(list)) => spec::parse_ratio_list(list)
                .map_err(usage)?
                .into_iter()
                .map(|r| vec![(r, 1.0)])
                .collect(),
            (None, None) => vec![vec![]],
        };
        if self.ratio_in_model && ratio_runs[0].is_empty() {
            return Err(usage(
                "--ratio-in-model needs --ratios or --ratio-sweep".into(),
            ));
        }
        let requests = match (self.requests, self.requests_per_client) {
            (Some(0), _) | (_, Some(0)) => {
                return Err(usage("request counts must be at least 1".into()))
            }
            (Some(n), _) => Some(RequestBound::Total(n)),
            (None, Some(_)) if open => {
                return Err(usage(
                    "--requests-per-client is for the closed loop; use --requests with --rate"
                        .into(),
                ))
            }
            (None, Some(n)) => Some(RequestBound::PerClient(n)),
            (None, None) if self.duration.is_none() => Some(RequestBound::Total(DEFAULT_REQUESTS)),
            (None, None) => None,
        };
        let all_at_once = loads
            .iter()
            .any(|l| matches!(l, Load::Open { rate, .. } if rate.is_infinite()));
        if all_at_once && !matches!(requests, Some(RequestBound::Total(_))) {
            return Err(usage(
                "--rate inf sends every request at once: give --requests".into(),
            ));
        }
        let duration = positive("duration", self.duration)?.map(Duration::from_secs_f64);
        let timeout = positive("timeout", Some(self.timeout))?
            .map(Duration::from_secs_f64)
            .unwrap_or_default();
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(usage("--temperature must be a finite number >= 0".into()));
        }
        let prompt_tokens = match &self.prompt_tokens {
            Some(s) => LengthSpec::parse(s).map_err(|e| usage(format!("--prompt-tokens: {e}")))?,
            None => LengthSpec::Fixed { tokens: 128 },
        };
        let prompts = match (&self.corpus, &self.prompts) {
            (Some(c), _) => PromptSpec::Corpus(c.clone()),
            (None, Some(l)) => PromptSpec::Lines(l.clone()),
            (None, None) => PromptSpec::Synthetic,
        };
        let max_tokens =
            LengthSpec::parse(&self.max_tokens).map_err(|e| usage(format!("--max-tokens: {e}")))?;
        let extra_body = match &self.extra_body {
            None => serde_json::Map::new(),
            Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(serde_json::Value::Object(map)) => {
                    if map.contains_key("stream") {
                        return Err(usage(
                            "--extra-body may not set \"stream\": the tool always streams".into(),
                        ));
                    }
                    map
                }
                _ => return Err(usage(format!("--extra-body {text:?} is not a JSON object"))),
            },
        };
        let slo = Slo {
            ttft_ms: positive("slo-ttft-ms", self.slo_ttft_ms)?,
            itl_ms: positive("slo-itl-ms", self.slo_itl_ms)?,
            e2e_ms: positive("slo-e2e-ms", self.slo_e2e_ms)?,
        };
        if let Some(path) = &self.plot {
            let png = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png"));
            if !png {
                return Err(usage(format!(
                    "--plot {}: the chart is a PNG file, name it *.png",
                    path.display()
                )));
            }
        }
        Ok(Config {
            base_url,
            model: self.model.clone(),
            api_key: self.api_key.clone(),
            endpoint: self.endpoint,
            loads,
            ratio_runs,
            requests,
            duration,
            timeout,
            warmup: self.warmup,
            prompt_tokens,
            prompts,
            max_tokens,
            ignore_eos: self.ignore_eos,
            min_tokens: self.min_tokens,
            temperature: self.temperature,
            ratio_in_model: self.ratio_in_model,
            stream_usage: !self.no_stream_usage,
            extra_body,
            slo,
            seed: self.seed,
            label: self.label.clone(),
            progress: !self.no_progress,
        })
    }

    fn loads(&self) -> Result<Vec<Load>> {
        if !(self.burstiness.is_finite() && self.burstiness > 0.0) {
            return Err(usage("--burstiness must be a finite number > 0".into()));
        }
        let open = |rates: Vec<f64>| -> Result<Vec<Load>> {
            if self.max_concurrency == Some(0) {
                return Err(usage("--max-concurrency must be at least 1".into()));
            }
            Ok(rates
                .into_iter()
                .map(|rate| Load::Open {
                    rate,
                    burstiness: self.burstiness,
                    max_concurrency: self.max_concurrency,
                })
                .collect())
        };
        let closed = |list: Vec<usize>| -> Result<Vec<Load>> {
            if self.max_concurrency.is_some() {
                return Err(usage(
                    "--max-concurrency caps the open loop (--rate); the closed loop's cap is --concurrency"
                        .into(),
                ));
            }
            Ok(list
                .into_iter()
                .map(|concurrency| Load::Closed { concurrency })
                .collect())
        };
        match (&self.sweep, &self.concurrency, &self.rate) {
            (_, Some(_), Some(_)) => Err(usage(
                "--concurrency (closed loop) and --rate (open loop) exclude each other; cap an open loop with --max-concurrency"
                    .into(),
            )),
            (Some(sweep), c, r) => match SweepSpec::parse(sweep).map_err(usage)? {
                SweepSpec::Concurrency(list) if c.is_none() && r.is_none() => closed(list),
                SweepSpec::Rate(list) if c.is_none() && r.is_none() => open(list),
                _ => Err(usage(
                    "--sweep already sets the concurrencies or rates; drop --concurrency/--rate"
                        .into(),
                )),
            },
            (None, None, Some(r)) => open(spec::parse_rate_list(r).map_err(usage)?),
            (None, c, None) => closed(
                spec::parse_concurrency_list(c.as_deref().unwrap_or("1")).map_err(usage)?,
            ),
        }
    }
}

/// `http://host:8080/v1/` -> `http://host:8080`.
fn normalise_url(url: &str) -> Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/v1").unwrap_or(trimmed);
    if trimmed.starts_with("https://") {
        return Err(usage(format!(
            "--url {url:?}: this build speaks plain http:// only (measure behind the TLS proxy, or from inside it)"
        )));
    }
    let ok = trimmed.starts_with("http://")
        && trimmed.len() > "http://".len()
        && reqwest::Url::parse(trimmed).is_ok();
    if !ok {
        return Err(usage(format!(
            "--url {url:?} is not an http base URL like http://127.0.0.1:8080"
        )));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config> {
        let mut argv = vec!["epas-loadtest"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv)
            .map_err(|e| usage(e.to_string()))?
            .config()
    }

    #[test]
    fn defaults_are_one_client_and_a_hundred_requests() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.loads, vec![Load::Closed { concurrency: 1 }]);
        assert_eq!(c.requests, Some(RequestBound::Total(DEFAULT_REQUESTS)));
        assert_eq!(c.ratio_runs, vec![Vec::<(f64, f64)>::new()]);
        assert_eq!(c.base_url, "http://127.0.0.1:8080");
        let c = parse(&["--duration", "5"]).unwrap();
        assert_eq!(c.requests, None);
    }

    #[test]
    fn sweeps_and_ratio_runs() {
        let c = parse(&[
            "--sweep",
            "rate=1,inf",
            "--burstiness",
            "0.5",
            "--url",
            "http://h:1/v1/",
        ])
        .unwrap();
        assert_eq!(c.loads.len(), 2);
        assert_eq!(c.base_url, "http://h:1");
        let c = parse(&["--concurrency", "1,4", "--ratio-sweep", "0,0.5"]).unwrap();
        assert_eq!(c.loads.len(), 2);
        assert_eq!(c.ratio_runs, vec![vec![(0.0, 1.0)], vec![(0.5, 1.0)]]);
        let c = parse(&["--ratios", "0:1,0.5:1", "--requests-per-client", "2"]).unwrap();
        assert_eq!(c.ratio_runs, vec![vec![(0.0, 0.5), (0.5, 0.5)]]);
        assert_eq!(c.requests, Some(RequestBound::PerClient(2)));
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for bad in [
            &["--concurrency", "0"][..],
            &["--concurrency", "2", "--rate", "1"],
            &["--sweep", "concurrency=1,2", "--concurrency", "3"],
            &["--rate", "1", "--requests-per-client", "2"],
            &["--concurrency", "2", "--max-concurrency", "2"],
            &["--burstiness", "0"],
            &["--timeout", "0"],
            &["--duration", "-1"],
            &["--ratios", "0.5", "--ratio-sweep", "0"],
            &["--ratios", "x"],
            &["--ratio-in-model"],
            &["--prompt-tokens", "0"],
            &["--max-tokens", "uniform:5:1"],
            &["--extra-body", "[1]"],
            &["--extra-body", "{\"stream\": false}"],
            &["--plot", "chart.svg"],
            &["--url", "localhost:8080"],
            &["--url", "https://api.example.com"],
            &["--slo-ttft-ms", "0"],
            &["--requests", "0"],
            &["--rate", "inf", "--duration", "10"],
            &["--no-such-flag"],
        ] {
            let e = parse(bad).err().unwrap_or_else(|| panic!("{bad:?} passed"));
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }
}
