//! `epas serve` on the GPU code path (tensor forward, device block pool), run on the CPU with
//! `--device cpu-tensor`: mixed-ratio requests batched together answer as they do alone, and
//! the pool's blocks come back.

mod support;

use serde_json::json;
use support::*;

#[test]
fn mixed_ratio_batches_on_the_device_path_answer_as_alone() {
    let s = Server::start(&[
        "--allow-untrained-sharing",
        "--device",
        "cpu-tensor",
        "--device-dtype",
        "f32",
        "--kv-cache-dtype",
        "f32",
    ]);
    let prompts = [
        "Mr. Speaker, Mr. Vice President, Members of Congress",
        "The capital of France is",
        "Once upon a time, in a small village by the sea, there lived",
    ];
    let body = |prompt: &str, ratio: f64| {
        json!({"model": MODEL, "prompt": prompt, "max_tokens": 10, "temperature": 0,
               "ignore_eos": true, "sharing_ratio": ratio})
    };
    let complete = |prompt: &str, ratio: f64| {
        let (status, r) = s.post_json("/v1/completions", &body(prompt, ratio));
        assert_eq!(status, 200, "{r}");
        r["choices"][0]["text"].as_str().unwrap().to_string()
    };
    let mut alone = Vec::new();
    for ratio in [0.0, 0.5] {
        for p in prompts {
            alone.push(((p, ratio), complete(p, ratio)));
        }
    }
    // llama.cpp's greedy continuation of the first prompt on the same file.
    assert!(
        alone[0].1.starts_with(", and the President."),
        "{:?}",
        alone[0].1
    );
    assert_ne!(alone[0].1, alone[3].1, "ratio 0.5 shares attention");

    let together: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = alone
            .iter()
            .map(|((p, ratio), _)| scope.spawn(|| complete(p, *ratio)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (((p, ratio), want), got) in alone.iter().zip(&together) {
        assert_eq!(got, want, "{p:?} at ratio {ratio}");
    }
    assert!(s.metric("epas_batch_size_sum").unwrap() > s.metric("epas_batch_size_count").unwrap());
    assert_eq!(
        s.metric("epas_kv_cache_bytes_per_token{sharing_ratio=\"0.50\"}"),
        Some(34560.0),
        "45 of 60 K/V rows per token, 192 f32 values each"
    );
    s.wait_metric("epas_kv_cache_blocks{state=\"used\"}", 0.0);
}
