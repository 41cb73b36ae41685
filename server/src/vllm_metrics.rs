//! The metric names LLM routers read (vLLM's `vllm:*`), derived at scrape time from the gathered
//! `epas_*` families: both name sets come from the same observations and cannot drift apart.
//! Per-ratio series are summed (routers know no sharing ratio) and every series carries
//! `model_name`.

use std::collections::BTreeMap;

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

/// What the `vllm:*` labels and `vllm:cache_config_info` describe.
pub struct ServedEngine<'a> {
    pub model_name: &'a str,
    /// `(block_size, num_gpu_blocks)` of the KV pool, once the model is loaded.
    pub cache: Option<(usize, usize)>,
}

/// One `vllm:*` family: its name, the `epas_*` family it sums, and the labels it keeps
/// (`epas` name, `vllm` name); every other label is summed over.
struct Derived {
    name: &'static str,
    source: &'static str,
    keep: &'static [(&'static str, &'static str)],
    help: &'static str,
}

const DERIVED: &[Derived] = &[
    Derived {
        name: "vllm:num_requests_waiting",
        source: "epas_requests_waiting",
        keep: &[],
        help: "Requests waiting for admission (epas_requests_waiting).",
    },
    Derived {
        name: "vllm:num_requests_running",
        source: "epas_requests_running",
        keep: &[],
        help: "Sequences in the running batch (epas_requests_running).",
    },
    Derived {
        name: "vllm:kv_cache_usage_perc",
        source: "epas_kv_cache_usage_ratio",
        keep: &[],
        help: "KV cache usage, 0 to 1 (epas_kv_cache_usage_ratio).",
    },
    Derived {
        name: "vllm:gpu_cache_usage_perc",
        source: "epas_kv_cache_usage_ratio",
        keep: &[],
        help: "KV cache usage, 0 to 1; older name of vllm:kv_cache_usage_perc.",
    },
    Derived {
        name: "vllm:prompt_tokens_total",
        source: "epas_prompt_tokens_total",
        keep: &[],
        help: "Prefill tokens processed (epas_prompt_tokens_total over all ratios).",
    },
    Derived {
        name: "vllm:generation_tokens_total",
        source: "epas_generation_tokens_total",
        keep: &[],
        help: "Generated tokens (epas_generation_tokens_total over all ratios).",
    },
    Derived {
        name: "vllm:time_to_first_token_seconds",
        source: "epas_time_to_first_token_seconds",
        keep: &[],
        help: "Time to first token (epas_time_to_first_token_seconds over all ratios).",
    },
    Derived {
        name: "vllm:inter_token_latency_seconds",
        source: "epas_inter_token_latency_seconds",
        keep: &[],
        help: "Inter-token latency (epas_inter_token_latency_seconds over all ratios).",
    },
    Derived {
        name: "vllm:e2e_request_latency_seconds",
        source: "epas_e2e_request_latency_seconds",
        keep: &[],
        help: "End-to-end sequence latency (epas_e2e_request_latency_seconds over all ratios).",
    },
    Derived {
        name: "vllm:request_queue_time_seconds",
        source: "epas_request_queue_time_seconds",
        keep: &[],
        help: "Time waiting for admission (epas_request_queue_time_seconds over all ratios).",
    },
    Derived {
        name: "vllm:request_success_total",
        source: "epas_requests_finished_total",
        keep: &[("finish_reason", "finished_reason")],
        help: "Finished sequences by finish reason (epas_requests_finished_total over all ratios).",
    },
    Derived {
        name: "vllm:prefix_cache_queries_total",
        source: "epas_prefix_cache_queried_tokens_total",
        keep: &[],
        help: "Prefix cache queries, in queried prompt tokens (epas_prefix_cache_queried_tokens_total).",
    },
    Derived {
        name: "vllm:prefix_cache_hits_total",
        source: "epas_prefix_cache_hit_tokens_total",
        keep: &[],
        help: "Prefix cache hits, in cached prompt tokens (epas_prefix_cache_hit_tokens_total).",
    },
];

/// The `vllm:*` families of `epas` (already gathered), plus `vllm:cache_config_info`.
pub(crate) fn vllm_families(epas: &[MetricFamily], served: &ServedEngine) -> Vec<MetricFamily> {
    let mut out: Vec<MetricFamily> = DERIVED
        .iter()
        .filter_map(|d| {
            let source = epas.iter().find(|f| f.name() == d.source)?;
            Some(derive(d, source, served.model_name))
        })
        .filter(|f| !f.get_metric().is_empty())
        .collect();
    if let Some((block_size, num_blocks)) = served.cache {
        out.push(cache_config_info(served.model_name, block_size, num_blocks));
    }
    out
}

fn derive(d: &Derived, source: &MetricFamily, model_name: &str) -> MetricFamily {
    let kind = source.get_field_type();
    let mut groups: BTreeMap<Vec<String>, Metric> = BTreeMap::new();
    for metric in source.get_metric() {
        let kept: Vec<String> = d
            .keep
            .iter()
            .map(|(epas_label, _)| label_value(metric, epas_label))
            .collect();
        match groups.get_mut(&kept) {
            Some(sum) => add(sum, metric, kind),
            None => {
                let mut first = metric.clone();
                let mut labels = vec![label("model_name", model_name)];
                for ((_, vllm_label), value) in d.keep.iter().zip(&kept) {
                    labels.push(label(vllm_label, value));
                }
                first.set_label(labels);
                groups.insert(kept, first);
            }
        }
    }
    let mut family = MetricFamily::default();
    family.set_name(d.name.to_string());
    family.set_help(d.help.to_string());
    family.set_field_type(kind);
    family.set_metric(groups.into_values().collect());
    family
}

/// Adds `other` into `sum`; histograms of one source share their buckets.
fn add(sum: &mut Metric, other: &Metric, kind: MetricType) {
    match kind {
        MetricType::COUNTER => {
            let mut c = Counter::default();
            c.set_value(sum.get_counter().get_value() + other.get_counter().get_value());
            sum.set_counter(c);
        }
        MetricType::GAUGE => {
            let mut g = Gauge::default();
            g.set_value(sum.get_gauge().get_value() + other.get_gauge().get_value());
            sum.set_gauge(g);
        }
        MetricType::HISTOGRAM => {
            let (a, b) = (sum.get_histogram(), other.get_histogram());
            let mut h = Histogram::default();
            h.set_sample_count(a.get_sample_count() + b.get_sample_count());
            h.set_sample_sum(a.get_sample_sum() + b.get_sample_sum());
            let buckets = a
                .get_bucket()
                .iter()
                .zip(b.get_bucket())
                .map(|(x, y)| {
                    let mut bucket = Bucket::default();
                    bucket.set_upper_bound(x.upper_bound());
                    bucket.set_cumulative_count(x.cumulative_count() + y.cumulative_count());
                    bucket
                })
                .collect();
            h.set_bucket(buckets);
            sum.set_histogram(h);
        }
        _ => {}
    }
}

fn cache_config_info(model_name: &str, block_size: usize, num_blocks: usize) -> MetricFamily {
    let mut gauge = Gauge::default();
    gauge.set_value(1.0);
    let mut metric = Metric::from_gauge(gauge);
    metric.set_label(vec![
        label("model_name", model_name),
        label("block_size", &block_size.to_string()),
        label("num_gpu_blocks", &num_blocks.to_string()),
    ]);
    let mut family = MetricFamily::default();
    family.set_name("vllm:cache_config_info".to_string());
    family.set_help(
        "KV cache configuration: positions per block and blocks in the pool (each block one layer's K or V).".to_string(),
    );
    family.set_field_type(MetricType::GAUGE);
    family.set_metric(vec![metric]);
    family
}

fn label_value(metric: &Metric, name: &str) -> String {
    metric
        .get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value().to_string())
        .unwrap_or_default()
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(value.to_string());
    pair
}
