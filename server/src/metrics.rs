//! Prometheus metrics (a public contract: names and labels are documented in README and never
//! renamed silently). Latencies are measured at engine steps through [`EngineObserver`].

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::engine::{EngineObserver, EngineSnapshot, FinishReason, StepPhase};
use crate::vllm_metrics::vllm_families;
pub use crate::vllm_metrics::ServedEngine;

/// The `sharing_ratio` label: the effective ratio `k / L` with two decimals.
pub fn ratio_label(ratio: f64) -> String {
    format!("{ratio:.2}")
}

pub struct Metrics {
    registry: Registry,
    pub requests_total: IntCounterVec,
    pub requests_running: IntGauge,
    pub requests_waiting: IntGauge,
    pub prompt_tokens_total: IntCounterVec,
    pub generation_tokens_total: IntCounterVec,
    pub time_to_first_token: HistogramVec,
    pub inter_token_latency: HistogramVec,
    pub e2e_request_latency: HistogramVec,
    pub request_queue_time: HistogramVec,
    pub batch_size: Histogram,
    pub step_duration: HistogramVec,
    pub kv_cache_blocks: IntGaugeVec,
    pub kv_cache_usage_ratio: prometheus::Gauge,
    pub requests_cancelled_total: IntCounterVec,
    pub requests_rejected_total: IntCounterVec,
    pub requests_finished_total: IntCounterVec,
    pub preemptions_total: prometheus::IntCounter,
    pub prefix_cache_queries_total: IntCounterVec,
    pub prefix_cache_queried_tokens_total: IntCounterVec,
    pub prefix_cache_hit_tokens_total: IntCounterVec,
    pub kv_cache_bytes_per_token: IntGaugeVec,
    pub spec_decode_drafts_total: IntCounterVec,
    pub spec_decode_draft_tokens_total: IntCounterVec,
    pub spec_decode_accepted_tokens_total: IntCounterVec,
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0,
        2.5, 5.0, 10.0, 20.0, 40.0, 80.0,
    ]
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let ratio = &["sharing_ratio"];
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(format!("epas_{name}"), help), labels)
        };
        let hist = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            HistogramVec::new(
                HistogramOpts::new(format!("epas_{name}"), help).buckets(buckets),
                labels,
            )
        };
        let m = Self {
            requests_total: counter(
                "requests_total",
                "Generation requests by the HTTP status they were answered with.",
                &["status"],
            )?,
            requests_running: IntGauge::new(
                "epas_requests_running",
                "Sequences holding a KV cache in the engine.",
            )?,
            requests_waiting: IntGauge::new(
                "epas_requests_waiting",
                "Requests queued for admission.",
            )?,
            prompt_tokens_total: counter(
                "prompt_tokens_total",
                "Prompt tokens run through the model (prefill), by sharing ratio.",
                ratio,
            )?,
            generation_tokens_total: counter(
                "generation_tokens_total",
                "Generated tokens, by sharing ratio.",
                ratio,
            )?,
            time_to_first_token: hist(
                "time_to_first_token_seconds",
                "Arrival to first sampled token, measured at engine steps.",
                ratio,
                latency_buckets(),
            )?,
            inter_token_latency: hist(
                "inter_token_latency_seconds",
                "Time between consecutive tokens of a sequence, at engine steps.",
                ratio,
                latency_buckets(),
            )?,
            e2e_request_latency: hist(
                "e2e_request_latency_seconds",
                "Arrival to the end of a sequence.",
                ratio,
                latency_buckets(),
            )?,
            request_queue_time: hist(
                "request_queue_time_seconds",
                "Arrival to admission into the running batch.",
                ratio,
                latency_buckets(),
            )?,
            batch_size: Histogram::with_opts(
                HistogramOpts::new("epas_batch_size", "Sequences in one engine step.")
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            )?,
            step_duration: hist(
                "step_duration_seconds",
                "Duration of one engine step by phase (prefill, decode, mixed).",
                &["phase"],
                latency_buckets(),
            )?,
            kv_cache_blocks: IntGaugeVec::new(
                Opts::new(
                    "epas_kv_cache_blocks",
                    "KV cache blocks by state: used (running sequences), cached (prefix cache only), free.",
                ),
                &["state"],
            )?,
            kv_cache_usage_ratio: prometheus::Gauge::new(
                "epas_kv_cache_usage_ratio",
                "Fraction of KV cache blocks held by running sequences.",
            )?,
            requests_cancelled_total: counter(
                "requests_cancelled_total",
                "Sequences dropped because their client went away, by sharing ratio.",
                ratio,
            )?,
            requests_rejected_total: counter(
                "requests_rejected_total",
                "Generation requests refused before running, by reason (queue_full, draining, invalid, unauthorized, loading, engine_failed).",
                &["reason"],
            )?,
            requests_finished_total: counter(
                "requests_finished_total",
                "Sequences finished, by sharing ratio and finish reason.",
                &["sharing_ratio", "finish_reason"],
            )?,
            preemptions_total: prometheus::IntCounter::new(
                "epas_preemptions_total",
                "Sequences whose KV cache was freed to make room (recomputed later).",
            )?,
            prefix_cache_queries_total: counter(
                "prefix_cache_queries_total",
                "Prefix-cache lookups by result (hit, miss).",
                &["result"],
            )?,
            prefix_cache_queried_tokens_total: counter(
                "prefix_cache_queried_tokens_total",
                "Prompt tokens looked up in the prefix cache (once per sequence), by sharing ratio.",
                ratio,
            )?,
            prefix_cache_hit_tokens_total: counter(
                "prefix_cache_hit_tokens_total",
                "Prompt tokens found in the prefix cache (not recomputed), by sharing ratio.",
                ratio,
            )?,
            kv_cache_bytes_per_token: IntGaugeVec::new(
                Opts::new(
                    "epas_kv_cache_bytes_per_token",
                    "KV cache bytes one token occupies, by sharing ratio (sharing layers keep no K).",
                ),
                ratio,
            )?,
            spec_decode_drafts_total: counter(
                "spec_decode_drafts_total",
                "Drafts checked by speculative decoding (one per sequence and step), by sharing ratio.",
                ratio,
            )?,
            spec_decode_draft_tokens_total: counter(
                "spec_decode_draft_tokens_total",
                "Draft tokens checked by speculative decoding, by sharing ratio.",
                ratio,
            )?,
            spec_decode_accepted_tokens_total: counter(
                "spec_decode_accepted_tokens_total",
                "Draft tokens kept (the model agreed), by sharing ratio.",
                ratio,
            )?,
            registry,
        };
        m.register_all()?;
        for reason in crate::http::REFUSAL_REASONS {
            m.requests_rejected_total.with_label_values(&[reason]);
        }
        Ok(m)
    }

    /// Creates the per-ratio series of a ratio so dashboards see them before traffic.
    pub fn init_ratio(&self, ratio: f64, kv_bytes_per_token: usize) {
        let label = ratio_label(ratio);
        self.kv_cache_bytes_per_token
            .with_label_values(&[&label])
            .set(kv_bytes_per_token as i64);
        self.requests_cancelled_total.with_label_values(&[&label]);
        self.generation_tokens_total.with_label_values(&[&label]);
        self.prompt_tokens_total.with_label_values(&[&label]);
        self.prefix_cache_queried_tokens_total
            .with_label_values(&[&label]);
        self.prefix_cache_hit_tokens_total
            .with_label_values(&[&label]);
        for histogram in [
            &self.time_to_first_token,
            &self.inter_token_latency,
            &self.e2e_request_latency,
            &self.request_queue_time,
        ] {
            histogram.with_label_values(&[&label]);
        }
        for reason in [FinishReason::Stop, FinishReason::Length] {
            self.requests_finished_total
                .with_label_values(&[&label, reason.as_str()]);
        }
    }

    fn register_all(&self) -> Result<(), prometheus::Error> {
        let r = &self.registry;
        r.register(Box::new(self.requests_total.clone()))?;
        r.register(Box::new(self.requests_running.clone()))?;
        r.register(Box::new(self.requests_waiting.clone()))?;
        r.register(Box::new(self.prompt_tokens_total.clone()))?;
        r.register(Box::new(self.generation_tokens_total.clone()))?;
        r.register(Box::new(self.time_to_first_token.clone()))?;
        r.register(Box::new(self.inter_token_latency.clone()))?;
        r.register(Box::new(self.e2e_request_latency.clone()))?;
        r.register(Box::new(self.request_queue_time.clone()))?;
        r.register(Box::new(self.batch_size.clone()))?;
        r.register(Box::new(self.step_duration.clone()))?;
        r.register(Box::new(self.kv_cache_blocks.clone()))?;
        r.register(Box::new(self.kv_cache_usage_ratio.clone()))?;
        r.register(Box::new(self.requests_cancelled_total.clone()))?;
        r.register(Box::new(self.requests_rejected_total.clone()))?;
        r.register(Box::new(self.requests_finished_total.clone()))?;
        r.register(Box::new(self.preemptions_total.clone()))?;
        r.register(Box::new(self.prefix_cache_queries_total.clone()))?;
        r.register(Box::new(self.prefix_cache_queried_tokens_total.clone()))?;
        r.register(Box::new(self.prefix_cache_hit_tokens_total.clone()))?;
        r.register(Box::new(self.kv_cache_bytes_per_token.clone()))?;
        r.register(Box::new(self.spec_decode_drafts_total.clone()))?;
        r.register(Box::new(self.spec_decode_draft_tokens_total.clone()))?;
        r.register(Box::new(self.spec_decode_accepted_tokens_total.clone()))?;
        Ok(())
    }

    /// Copies the engine's gauges, then renders the text exposition format: the `epas_*`
    /// families and the `vllm:*` names derived from them.
    pub fn render(&self, snapshot: &EngineSnapshot, served: &ServedEngine) -> String {
        self.requests_running.set(snapshot.running as i64);
        self.requests_waiting.set(snapshot.waiting as i64);
        let free = snapshot
            .kv_blocks_total
            .saturating_sub(snapshot.kv_blocks_used + snapshot.kv_blocks_cached);
        self.kv_cache_blocks
            .with_label_values(&["used"])
            .set(snapshot.kv_blocks_used as i64);
        self.kv_cache_blocks
            .with_label_values(&["cached"])
            .set(snapshot.kv_blocks_cached as i64);
        self.kv_cache_blocks
            .with_label_values(&["free"])
            .set(free as i64);
        self.kv_cache_usage_ratio
            .set(if snapshot.kv_blocks_total == 0 {
                0.0
            } else {
                snapshot.kv_blocks_used as f64 / snapshot.kv_blocks_total as f64
            });
        for (result, value) in [
            ("hit", snapshot.prefix_hits),
            ("miss", snapshot.prefix_misses),
        ] {
            let c = self.prefix_cache_queries_total.with_label_values(&[result]);
            c.inc_by(value.saturating_sub(c.get()));
        }
        self.preemptions_total.inc_by(
            snapshot
                .preemptions
                .saturating_sub(self.preemptions_total.get()),
        );
        let mut families = self.registry.gather();
        families.extend(vllm_families(&families, served));
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl EngineObserver for Metrics {
    fn admitted(&self, ratio: f64, queue_time: Duration) {
        self.request_queue_time
            .with_label_values(&[&ratio_label(ratio)])
            .observe(queue_time.as_secs_f64());
    }

    fn first_token(&self, ratio: f64, ttft: Duration) {
        self.time_to_first_token
            .with_label_values(&[&ratio_label(ratio)])
            .observe(ttft.as_secs_f64());
    }

    fn inter_token(&self, ratio: f64, latency: Duration) {
        self.inter_token_latency
            .with_label_values(&[&ratio_label(ratio)])
            .observe(latency.as_secs_f64());
    }

    fn generated(&self, ratio: f64, tokens: usize) {
        self.generation_tokens_total
            .with_label_values(&[&ratio_label(ratio)])
            .inc_by(tokens as u64);
    }

    fn prompt_processed(&self, ratio: f64, tokens: usize) {
        self.prompt_tokens_total
            .with_label_values(&[&ratio_label(ratio)])
            .inc_by(tokens as u64);
    }

    fn finished(&self, ratio: f64, reason: FinishReason, e2e: Duration) {
        let label = ratio_label(ratio);
        self.e2e_request_latency
            .with_label_values(&[&label])
            .observe(e2e.as_secs_f64());
        self.requests_finished_total
            .with_label_values(&[&label, reason.as_str()])
            .inc();
    }

    fn cancelled(&self, ratio: f64) {
        self.requests_cancelled_total
            .with_label_values(&[&ratio_label(ratio)])
            .inc();
    }

    fn prefix_looked_up(&self, ratio: f64, queried: usize, hit: usize) {
        let label = ratio_label(ratio);
        self.prefix_cache_queried_tokens_total
            .with_label_values(&[&label])
            .inc_by(queried as u64);
        self.prefix_cache_hit_tokens_total
            .with_label_values(&[&label])
            .inc_by(hit as u64);
    }

    fn speculated(&self, ratio: f64, drafted: usize, accepted: usize) {
        let label = ratio_label(ratio);
        self.spec_decode_drafts_total
            .with_label_values(&[&label])
            .inc();
        self.spec_decode_draft_tokens_total
            .with_label_values(&[&label])
            .inc_by(drafted as u64);
        self.spec_decode_accepted_tokens_total
            .with_label_values(&[&label])
            .inc_by(accepted as u64);
    }

    fn step(&self, phase: StepPhase, batch_size: usize, _tokens: usize, duration: Duration) {
        self.batch_size.observe(batch_size as f64);
        self.step_duration
            .with_label_values(&[phase.as_str()])
            .observe(duration.as_secs_f64());
    }
}
