//! `epas serve` over real HTTP: completions and chat, streamed and not, sharing ratios and
//! aliases, usage, metrics per ratio, authentication.

mod support;

use serde_json::json;
use support::*;

#[test]
fn completions_and_chat_streamed_and_not() {
    let s = Server::start(&["--allow-untrained-sharing"]);
    let prompt = "Mr. Speaker, Mr. Vice President, Members of Congress";
    let body = json!({"model": MODEL, "prompt": prompt, "max_tokens": 12, "temperature": 0});
    let (status, r) = s.post_json("/v1/completions", &body);
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["object"], "text_completion");
    let text = r["choices"][0]["text"].as_str().unwrap().to_string();
    // llama.cpp's greedy continuation of this prompt on the same file.
    assert!(text.starts_with(", and the President."), "{text:?}");
    assert_eq!(r["choices"][0]["finish_reason"], "length");
    let (_, tok) = s.post_json("/tokenize", &json!({"prompt": prompt}));
    assert_eq!(r["usage"]["prompt_tokens"], tok["count"]);
    assert_eq!(r["usage"]["completion_tokens"], 12);
    assert_eq!(
        r["usage"]["total_tokens"],
        tok["count"].as_u64().unwrap() + 12
    );
    let (_, detok) = s.post_json("/detokenize", &json!({"tokens": tok["tokens"]}));
    assert_eq!(detok["prompt"], prompt);

    // The same request streamed gives the same text, chunk by chunk, then usage and [DONE].
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let resp = s.post("/v1/completions", &streamed);
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (events, done) = read_sse(resp);
    assert!(done);
    assert_eq!(stream_text(&events), text);
    let last = events.last().unwrap();
    assert_eq!(last["choices"].as_array().unwrap().len(), 0);
    assert_eq!(last["usage"]["completion_tokens"], 12);
    assert!(events
        .iter()
        .any(|e| e["choices"][0]["finish_reason"] == "length"));

    let chat = json!({
        "model": MODEL,
        "messages": [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "What is 2+2?"}],
        "max_tokens": 8, "temperature": 0,
    });
    let (status, r) = s.post_json("/v1/chat/completions", &chat);
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["choices"][0]["message"]["role"], "assistant");
    let answer = r["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!answer.is_empty());
    let mut chat_stream = chat.clone();
    chat_stream["stream"] = json!(true);
    let (events, done) = read_sse(s.post("/v1/chat/completions", &chat_stream));
    assert!(done);
    assert_eq!(events[0]["object"], "chat.completion.chunk");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(stream_text(&events), answer);

    // Seeded sampling is reproducible; n choices come back separately.
    let sampled =
        json!({"prompt": prompt, "max_tokens": 10, "temperature": 0.8, "seed": 42, "n": 2});
    let (_, a) = s.post_json("/v1/completions", &sampled);
    let (_, b) = s.post_json("/v1/completions", &sampled);
    assert_eq!(a["choices"], b["choices"]);
    assert_eq!(a["choices"].as_array().unwrap().len(), 2);
    assert_eq!(a["usage"]["completion_tokens"], 20);

    // Log-probabilities.
    let (_, lp) = s.post_json(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 3, "temperature": 0, "logprobs": 2}),
    );
    let lps = &lp["choices"][0]["logprobs"];
    assert_eq!(lps["tokens"].as_array().unwrap().len(), 3);
    assert!(lps["token_logprobs"][0].as_f64().unwrap() <= 0.0);
    assert_eq!(lps["top_logprobs"][0].as_object().unwrap().len(), 2);

    let (_, models) = s.get_json("/v1/models");
    assert_eq!(models["data"][0]["id"], MODEL);
    assert_eq!(models["data"][0]["epas"]["num_layers"], 30);
}

#[test]
fn sharing_ratio_field_alias_headers_and_limits() {
    let s = Server::start(&["--allow-untrained-sharing"]);
    let resp = s.post(
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 2, "sharing_ratio": 0.5}),
    );
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-epas-sharing-layers"], "15");
    let r: serde_json::Value = resp.json().unwrap();
    assert_eq!(r["epas"]["sharing_layers"], 15);
    assert_eq!(r["epas"]["source_layer"], 14);
    assert_eq!(r["epas"]["sharing_ratio"], 0.5);

    let (status, r) = s.post_json("/v1/chat/completions", &json!({
        "model": format!("{MODEL}@0.25"), "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2,
    }));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["epas"]["sharing_layers"], 7);
    assert_eq!(r["epas"]["source_layer"], 22);

    let (status, r) = s.post_json(
        "/v1/completions",
        &json!({
            "model": format!("{MODEL}@0.25"), "prompt": "Hi", "sharing_ratio": 0.5,
        }),
    );
    assert_eq!(status, 400);
    assert_eq!(r["error"]["param"], "sharing_ratio");
    let (status, r) = s.post_json(
        "/v1/completions",
        &json!({"prompt": "Hi", "sharing_ratio": 1.0}),
    );
    assert_eq!(status, 400);
    assert!(
        r["error"]["message"].as_str().unwrap().contains("maximum"),
        "{r}"
    );

    // Without --allow-untrained-sharing an ordinary checkpoint serves ratio 0 only.
    let strict = Server::start(&[]);
    let (status, r) = strict.post_json(
        "/v1/completions",
        &json!({"prompt": "Hi", "sharing_ratio": 0.25}),
    );
    assert_eq!(status, 400);
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("maximum 0") && msg.contains("--allow-untrained-sharing"),
        "{msg}"
    );
    let (status, _) =
        strict.post_json("/v1/completions", &json!({"prompt": "Hi", "max_tokens": 1}));
    assert_eq!(status, 200);
}

#[test]
fn metrics_count_tokens_per_ratio() {
    let s = Server::start(&["--allow-untrained-sharing"]);
    for (ratio, n) in [(0.0, 5), (0.5, 7), (0.5, 3)] {
        let body = json!({"prompt": "The State of the Union", "max_tokens": n, "ignore_eos": true, "sharing_ratio": ratio});
        assert_eq!(s.post_json("/v1/completions", &body).0, 200);
    }
    assert_eq!(
        s.metric("epas_generation_tokens_total{sharing_ratio=\"0.00\"}"),
        Some(5.0)
    );
    assert_eq!(
        s.metric("epas_generation_tokens_total{sharing_ratio=\"0.50\"}"),
        Some(10.0)
    );
    assert_eq!(s.metric("epas_requests_total{status=\"200\"}"), Some(3.0));
    assert_eq!(
        s.metric("epas_time_to_first_token_seconds_count{sharing_ratio=\"0.50\"}"),
        Some(2.0)
    );
    assert_eq!(
        s.metric("epas_inter_token_latency_seconds_count{sharing_ratio=\"0.00\"}"),
        Some(4.0)
    );
    assert!(
        s.metric("epas_prompt_tokens_total{sharing_ratio=\"0.50\"}")
            .unwrap()
            >= 8.0
    );
    assert_eq!(
        s.metric("epas_kv_cache_bytes_per_token{sharing_ratio=\"0.50\"}"),
        Some(17280.0),
        "45 of 60 K/V rows per token, 192 f16 values each (the default --kv-cache-dtype)"
    );
    let text = s.metrics();
    for name in [
        "epas_requests_total",
        "epas_requests_running",
        "epas_requests_waiting",
        "epas_prompt_tokens_total",
        "epas_generation_tokens_total",
        "epas_time_to_first_token_seconds",
        "epas_inter_token_latency_seconds",
        "epas_e2e_request_latency_seconds",
        "epas_request_queue_time_seconds",
        "epas_batch_size",
        "epas_step_duration_seconds",
        "epas_kv_cache_blocks",
        "epas_kv_cache_usage_ratio",
        "epas_requests_cancelled_total",
        "epas_requests_rejected_total",
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no help text"
        );
    }
    s.wait_metric("epas_requests_running", 0.0);
    s.wait_metric("epas_kv_cache_blocks{state=\"used\"}", 0.0);
}

#[test]
fn api_keys_guard_the_api_but_not_health() {
    let s = Server::start(&["--api-key", "k1,k2"]);
    let body = json!({"prompt": "Hi", "max_tokens": 1});
    let r = s
        .client
        .post(s.url("/v1/completions"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let e: serde_json::Value = r.json().unwrap();
    assert_eq!(e["error"]["type"], "authentication_error");
    let r = s
        .client
        .post(s.url("/v1/completions"))
        .bearer_auth("nope")
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    for key in ["k1", "k2"] {
        let r = s
            .client
            .post(s.url("/v1/completions"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(s.client.get(s.url("/health")).send().unwrap().status(), 200);
    assert_eq!(
        s.client.get(s.url("/v1/models")).send().unwrap().status(),
        401
    );
}
