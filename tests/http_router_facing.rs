//! What an LLM router reads from a replica: the `vllm:*` metric names (equal to their `epas_*`
//! sources), `/ready`, and `owned_by` in `/v1/models`.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

/// One sample line of the exposition format: name, labels, value.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap();
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            Sample {
                name: name.to_string(),
                labels,
                value: value.parse().unwrap(),
            }
        })
        .collect()
}

/// The sum of the samples named `name` whose labels include every pair of `with`.
fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .map(|s| s.value)
        .sum()
}

const VLLM_NAMES: &[&str] = &[
    "vllm:num_requests_waiting",
    "vllm:num_requests_running",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "vllm:cache_config_info",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:time_to_first_token_seconds_count",
    "vllm:inter_token_latency_seconds_count",
    "vllm:e2e_request_latency_seconds_count",
    "vllm:request_queue_time_seconds_count",
    "vllm:request_success_total",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
];

/// `vllm:*` name, its `epas_*` source; the vLLM series is the source summed over ratios.
const SUMMED: &[(&str, &str)] = &[
    ("vllm:num_requests_waiting", "epas_requests_waiting"),
    ("vllm:num_requests_running", "epas_requests_running"),
    ("vllm:kv_cache_usage_perc", "epas_kv_cache_usage_ratio"),
    ("vllm:gpu_cache_usage_perc", "epas_kv_cache_usage_ratio"),
    ("vllm:prompt_tokens_total", "epas_prompt_tokens_total"),
    (
        "vllm:generation_tokens_total",
        "epas_generation_tokens_total",
    ),
    (
        "vllm:prefix_cache_queries_total",
        "epas_prefix_cache_queried_tokens_total",
    ),
    (
        "vllm:prefix_cache_hits_total",
        "epas_prefix_cache_hit_tokens_total",
    ),
];

const HISTOGRAMS: &[&str] = &[
    "time_to_first_token_seconds",
    "inter_token_latency_seconds",
    "e2e_request_latency_seconds",
    "request_queue_time_seconds",
];

/// Completions at two sharing ratios, a long prompt twice (the second finds it cached); the
/// finish reason of each.
fn run_requests(s: &Server) -> Vec<String> {
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(12);
    let bodies = [
        json!({"prompt": long, "max_tokens": 3, "temperature": 0}),
        json!({"prompt": long, "max_tokens": 5, "temperature": 0}),
        json!({"prompt": "Hello", "max_tokens": 4, "sharing_ratio": 0.5}),
        json!({"prompt": "Count: one two", "max_tokens": 40, "stop": [" "], "temperature": 0}),
        json!({"prompt": "Hi", "max_tokens": 2, "n": 2, "sharing_ratio": 0.5}),
    ];
    let mut reasons = Vec::new();
    for body in bodies {
        let (status, r) = s.post_json("/v1/completions", &body);
        assert_eq!(status, 200, "{r}");
        for choice in r["choices"].as_array().unwrap() {
            reasons.push(choice["finish_reason"].as_str().unwrap().to_string());
        }
    }
    reasons
}

#[test]
fn vllm_metric_names_carry_model_name_and_equal_their_epas_sources() {
    let s = Server::start(&["--allow-untrained-sharing"]);
    let reasons = run_requests(&s);
    let samples = parse(&s.metrics());

    for name in VLLM_NAMES {
        let found = samples.iter().find(|x| x.name == *name);
        let found = found.unwrap_or_else(|| panic!("{name} is not exported"));
        assert_eq!(
            found.labels.get("model_name").map(String::as_str),
            Some(MODEL),
            "{name}"
        );
    }
    for (vllm, epas) in SUMMED {
        assert_eq!(
            sum(&samples, vllm, &[]),
            sum(&samples, epas, &[]),
            "{vllm} vs {epas}"
        );
    }
    assert!(sum(&samples, "vllm:prompt_tokens_total", &[]) > 0.0);
    assert!(
        sum(&samples, "vllm:prefix_cache_hits_total", &[]) > 0.0,
        "the repeated long prompt hit the prefix cache"
    );
    assert!(
        sum(&samples, "vllm:prefix_cache_queries_total", &[])
            >= sum(&samples, "vllm:prefix_cache_hits_total", &[])
    );
    // The per-ratio hit rate exists for both ratios used.
    for ratio in ["0.00", "0.50"] {
        let q = sum(
            &samples,
            "epas_prefix_cache_queried_tokens_total",
            &[("sharing_ratio", ratio)],
        );
        assert!(q > 0.0, "prefix queries at ratio {ratio}");
    }

    for reason in ["stop", "length"] {
        let answered = reasons.iter().filter(|r| *r == reason).count() as f64;
        let vllm = sum(
            &samples,
            "vllm:request_success_total",
            &[("finished_reason", reason)],
        );
        let epas = sum(
            &samples,
            "epas_requests_finished_total",
            &[("finish_reason", reason)],
        );
        assert_eq!((vllm, epas), (answered, answered), "finish reason {reason}");
    }
    assert!(reasons.iter().any(|r| r == "stop") && reasons.iter().any(|r| r == "length"));

    for h in HISTOGRAMS {
        for suffix in ["_count", "_sum"] {
            let vllm = sum(&samples, &format!("vllm:{h}{suffix}"), &[]);
            let epas = sum(&samples, &format!("epas_{h}{suffix}"), &[]);
            assert!((vllm - epas).abs() < 1e-9, "{h}{suffix}: {vllm} vs {epas}");
        }
        let buckets = samples
            .iter()
            .filter(|x| x.name == format!("vllm:{h}_bucket"));
        for bucket in buckets {
            let le = bucket.labels["le"].as_str();
            let epas = sum(&samples, &format!("epas_{h}_bucket"), &[("le", le)]);
            assert_eq!(bucket.value, epas, "{h} bucket le={le}");
        }
    }
    assert_eq!(
        sum(&samples, "vllm:e2e_request_latency_seconds_count", &[]),
        reasons.len() as f64,
        "one e2e observation per finished sequence"
    );

    let info = samples
        .iter()
        .find(|x| x.name == "vllm:cache_config_info")
        .unwrap();
    assert_eq!(info.value, 1.0);
    let block_size: usize = info.labels["block_size"].parse().unwrap();
    let blocks: f64 = info.labels["num_gpu_blocks"].parse().unwrap();
    assert_eq!(block_size, 16);
    assert_eq!(blocks, sum(&samples, "epas_kv_cache_blocks", &[]));
}

#[test]
fn ready_is_200_when_serving_and_503_draining_and_models_say_who_owns_them() {
    let s = Server::start(&[]);
    assert_eq!(s.get_json("/ready"), (200, json!({"status": "ok"})));
    let (_, models) = s.get_json("/v1/models");
    assert_eq!(models["data"][0]["owned_by"], "epas", "{models}");

    // A long request keeps the draining server alive while /ready is asked.
    let base = s.base.clone();
    let stream = std::thread::spawn(move || {
        let body = json!({"prompt": "Once upon a time", "max_tokens": 256, "stream": true});
        let client = reqwest::blocking::Client::new();
        let r = client
            .post(format!("{base}/v1/completions"))
            .json(&body)
            .send()
            .unwrap();
        let (_, done) = read_sse(r);
        done
    });
    s.wait_metric("epas_requests_running", 1.0);
    s.sigterm();
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = s.get_json("/ready");
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "/ready stayed {status}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(body, json!({"status": "draining"}));
    assert!(stream.join().unwrap(), "the stream finished while draining");
}
