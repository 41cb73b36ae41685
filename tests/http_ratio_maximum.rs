//! One maximum per server: `/v1/models`, every ratio refusal and the `/metrics` series agree on the
//! largest ratio this server accepts (the built-in model is trained to 0.5, on 8 layers).

mod support;

use serde_json::json;
use support::*;

fn completion_with_ratio(s: &Server, ratio: f64) -> (u16, serde_json::Value) {
    s.post_json(
        "/v1/completions",
        &json!({"model": "builtin", "prompt": "Hi", "max_tokens": 1, "sharing_ratio": ratio}),
    )
}

#[test]
fn models_errors_and_metrics_name_one_maximum() {
    let s = Server::start_model("builtin", &[]);
    let (status, models) = {
        let r = s.client.get(s.url("/v1/models")).send().unwrap();
        (r.status().as_u16(), r.json::<serde_json::Value>().unwrap())
    };
    assert_eq!(status, 200);
    assert_eq!(
        models["data"][0]["epas"]["max_sharing_ratio"], 0.5,
        "{models}"
    );

    for ratio in [0.9, 0.875, 0.6] {
        let (status, body) = completion_with_ratio(&s, ratio);
        assert_eq!(status, 400, "ratio {ratio}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("above the maximum 0.5 "), "{message}");
    }
    let (status, body) = completion_with_ratio(&s, 0.5);
    assert_eq!(status, 200, "{body}");

    let metrics = s.metrics();
    let series_ratios: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("epas_kv_cache_bytes_per_token{"))
        .filter_map(|l| l.split("sharing_ratio=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        series_ratios,
        ["0.00", "0.25", "0.50"].into_iter().collect(),
        "{metrics}"
    );
}
