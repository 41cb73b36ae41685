//! `epas serve` under bad input, disconnects, overload and SIGTERM.

mod support;

use std::io::Read;
use std::time::Duration;

use serde_json::json;
use support::*;

/// One bad request: what it sends and the status it must get.
struct Case {
    name: &'static str,
    path: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    status: u16,
    param: Option<&'static str>,
}

fn case(
    name: &'static str,
    path: &'static str,
    body: serde_json::Value,
    status: u16,
    param: Option<&'static str>,
) -> Case {
    Case {
        name,
        path,
        content_type: "application/json",
        body: body.to_string().into_bytes(),
        status,
        param,
    }
}

fn raw(
    name: &'static str,
    path: &'static str,
    content_type: &'static str,
    body: &[u8],
    status: u16,
) -> Case {
    Case {
        name,
        path,
        content_type,
        body: body.to_vec(),
        status,
        param: None,
    }
}

fn battery() -> Vec<Case> {
    let c = "/v1/completions";
    let chat = "/v1/chat/completions";
    let long_prompt = "word ".repeat(9000);
    let calls_c1 = json!({"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]});
    vec![
        raw(
            "malformed json",
            c,
            "application/json",
            b"{\"prompt\": \"hi\"",
            400,
        ),
        raw("not an object", c, "application/json", b"[1, 2, 3]", 400),
        raw("empty body", c, "application/json", b"", 400),
        raw(
            "invalid utf-8",
            c,
            "application/json",
            b"{\"prompt\": \"caf\xe9\"}",
            400,
        ),
        raw(
            "json NaN literal",
            c,
            "application/json",
            b"{\"prompt\": \"hi\", \"temperature\": NaN}",
            400,
        ),
        raw(
            "huge number",
            c,
            "application/json",
            b"{\"prompt\": \"hi\", \"max_tokens\": 1e400}",
            400,
        ),
        raw(
            "wrong content type",
            c,
            "text/plain",
            b"{\"prompt\": \"hi\"}",
            415,
        ),
        raw(
            "form content type",
            c,
            "application/x-www-form-urlencoded",
            b"prompt=hi",
            415,
        ),
        case("missing prompt", c, json!({"max_tokens": 3}), 400, None),
        case(
            "missing messages",
            chat,
            json!({"max_tokens": 3}),
            400,
            None,
        ),
        case(
            "prompt wrong type",
            c,
            json!({"prompt": 42}),
            400,
            Some("prompt"),
        ),
        case(
            "max_tokens string",
            c,
            json!({"prompt": "hi", "max_tokens": "ten"}),
            400,
            Some("max_tokens"),
        ),
        case(
            "max_tokens zero",
            c,
            json!({"prompt": "hi", "max_tokens": 0}),
            400,
            Some("max_tokens"),
        ),
        case(
            "max_tokens negative",
            c,
            json!({"prompt": "hi", "max_tokens": -5}),
            400,
            Some("max_tokens"),
        ),
        case(
            "max_tokens beyond context",
            c,
            json!({"prompt": "hi", "max_tokens": 100000}),
            400,
            Some("max_tokens"),
        ),
        case(
            "temperature negative",
            c,
            json!({"prompt": "hi", "temperature": -1}),
            400,
            Some("temperature"),
        ),
        case(
            "temperature huge",
            c,
            json!({"prompt": "hi", "temperature": 1e30}),
            400,
            Some("temperature"),
        ),
        case(
            "top_p zero",
            c,
            json!({"prompt": "hi", "top_p": 0}),
            400,
            Some("top_p"),
        ),
        case(
            "top_p above one",
            c,
            json!({"prompt": "hi", "top_p": 1.5}),
            400,
            Some("top_p"),
        ),
        case(
            "top_k negative",
            c,
            json!({"prompt": "hi", "top_k": -7}),
            400,
            Some("top_k"),
        ),
        case(
            "min_p above one",
            c,
            json!({"prompt": "hi", "min_p": 2}),
            400,
            Some("min_p"),
        ),
        case("n zero", c, json!({"prompt": "hi", "n": 0}), 400, Some("n")),
        case(
            "n huge",
            c,
            json!({"prompt": "hi", "n": 1000000}),
            400,
            Some("n"),
        ),
        case(
            "presence penalty",
            c,
            json!({"prompt": "hi", "presence_penalty": 5}),
            400,
            Some("presence_penalty"),
        ),
        case(
            "frequency penalty",
            c,
            json!({"prompt": "hi", "frequency_penalty": -3}),
            400,
            Some("frequency_penalty"),
        ),
        case(
            "repetition penalty",
            c,
            json!({"prompt": "hi", "repetition_penalty": 0}),
            400,
            Some("repetition_penalty"),
        ),
        case(
            "unknown field",
            c,
            json!({"prompt": "hi", "foo": 1}),
            400,
            Some("foo"),
        ),
        case(
            "unknown chat field",
            chat,
            json!({"messages": [{"role": "user", "content": "hi"}], "functions": []}),
            400,
            Some("functions"),
        ),
        case(
            "stop too many",
            c,
            json!({"prompt": "hi", "stop": ["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}),
            400,
            Some("stop"),
        ),
        case(
            "stop empty string",
            c,
            json!({"prompt": "hi", "stop": [""]}),
            400,
            Some("stop"),
        ),
        case(
            "stop wrong type",
            c,
            json!({"prompt": "hi", "stop": 5}),
            400,
            Some("stop"),
        ),
        case(
            "empty prompt",
            c,
            json!({"prompt": ""}),
            400,
            Some("prompt"),
        ),
        case(
            "over-long prompt",
            c,
            json!({"prompt": long_prompt}),
            400,
            Some("prompt"),
        ),
        case(
            "token id out of vocab",
            c,
            json!({"prompt": [1, 2, 999999]}),
            400,
            Some("prompt"),
        ),
        case(
            "several prompts",
            c,
            json!({"prompt": ["a", "b"]}),
            400,
            Some("prompt"),
        ),
        case(
            "sharing ratio negative",
            c,
            json!({"prompt": "hi", "sharing_ratio": -0.5}),
            400,
            Some("sharing_ratio"),
        ),
        case(
            "sharing ratio above max",
            c,
            json!({"prompt": "hi", "sharing_ratio": 1.0}),
            400,
            Some("sharing_ratio"),
        ),
        case(
            "sharing ratio string",
            c,
            json!({"prompt": "hi", "sharing_ratio": "half"}),
            400,
            Some("sharing_ratio"),
        ),
        case(
            "unknown model",
            c,
            json!({"prompt": "hi", "model": "gpt-4"}),
            404,
            None,
        ),
        case(
            "bad alias ratio",
            c,
            json!({"prompt": "hi", "model": format!("{MODEL}@abc")}),
            400,
            Some("model"),
        ),
        case(
            "logit bias key",
            c,
            json!({"prompt": "hi", "logit_bias": {"notanid": 1}}),
            400,
            Some("logit_bias"),
        ),
        case(
            "logit bias value",
            c,
            json!({"prompt": "hi", "logit_bias": {"5": 500}}),
            400,
            Some("logit_bias"),
        ),
        case(
            "logprobs too many",
            c,
            json!({"prompt": "hi", "logprobs": 50}),
            400,
            Some("logprobs"),
        ),
        case(
            "echo unsupported",
            c,
            json!({"prompt": "hi", "echo": true}),
            400,
            Some("echo"),
        ),
        case(
            "suffix unsupported",
            c,
            json!({"prompt": "hi", "suffix": "x"}),
            400,
            Some("suffix"),
        ),
        case(
            "min_tokens above max",
            c,
            json!({"prompt": "hi", "max_tokens": 2, "min_tokens": 5}),
            400,
            Some("min_tokens"),
        ),
        case(
            "empty messages",
            chat,
            json!({"messages": []}),
            400,
            Some("messages"),
        ),
        case(
            "bad role",
            chat,
            json!({"messages": [{"role": "robot", "content": "hi"}]}),
            400,
            Some("messages[0].role"),
        ),
        case(
            "image part",
            chat,
            json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            400,
            Some("messages[0].content"),
        ),
        case(
            "message without role",
            chat,
            json!({"messages": [{"content": "hi"}]}),
            400,
            Some("messages[0].role"),
        ),
        case(
            "deprecated function role",
            chat,
            json!({"messages": [{"role": "function", "name": "f", "content": "1"}]}),
            400,
            Some("messages[0].role"),
        ),
        case(
            "user message without content",
            chat,
            json!({"messages": [{"role": "user"}]}),
            400,
            Some("messages[0].content"),
        ),
        case(
            "empty content parts",
            chat,
            json!({"messages": [{"role": "system", "content": []}, {"role": "user", "content": "hi"}]}),
            400,
            Some("messages[0].content"),
        ),
        case(
            "assistant message without content",
            chat,
            json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": null}, {"role": "user", "content": "hi"}]}),
            400,
            Some("messages[1].content"),
        ),
        case(
            "tool message answering no call",
            chat,
            json!({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "c1", "content": "1"}]}),
            400,
            Some("messages[1].tool_call_id"),
        ),
        case(
            "tool message without tool_call_id",
            chat,
            json!({"messages": [{"role": "user", "content": "hi"},
                calls_c1,
                {"role": "tool", "content": "1"}]}),
            400,
            Some("messages[2].tool_call_id"),
        ),
        case(
            "tool_call_id on a user message",
            chat,
            json!({"messages": [{"role": "user", "content": "hi", "tool_call_id": "c1"}]}),
            400,
            Some("messages[0].tool_call_id"),
        ),
        case(
            "unknown message field",
            chat,
            json!({"messages": [{"role": "user", "content": "hi", "colour": "red"}]}),
            400,
            Some("messages[0].colour"),
        ),
        case(
            "assistant tool call left unanswered",
            chat,
            json!({"messages": [{"role": "user", "content": "hi"}, calls_c1]}),
            400,
            Some("messages[1].tool_calls"),
        ),
        case(
            "tool without a valid name",
            chat,
            json!({"messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f"}},
                          {"type": "function", "function": {"name": "no spaces"}}]}),
            400,
            Some("tools[1].function.name"),
        ),
        case(
            "tool_choice naming no tool",
            chat,
            json!({"messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            400,
            Some("tool_choice.function.name"),
        ),
        case(
            "tokenize message without content",
            "/tokenize",
            json!({"messages": [{"role": "user", "content": null}]}),
            400,
            Some("messages[0].content"),
        ),
        case(
            "empty tools",
            chat,
            json!({"messages": [{"role": "user", "content": "hi"}], "tools": []}),
            400,
            Some("tools"),
        ),
        case(
            "top_logprobs without logprobs",
            chat,
            json!({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}),
            400,
            Some("top_logprobs"),
        ),
        case(
            "unknown response format",
            chat,
            json!({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "yaml"}}),
            400,
            Some("response_format.type"),
        ),
        case(
            "unknown route",
            "/v1/embeddings",
            json!({"input": "hi"}),
            404,
            None,
        ),
        case(
            "detokenize bad id",
            "/detokenize",
            json!({"tokens": [4000000]}),
            400,
            Some("tokens"),
        ),
    ]
}

/// POSTs `body` over a plain TCP connection, writing from another thread, and returns the
/// status and body of the response.
fn post_raw(base: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::Write;
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let upload = std::thread::spawn(move || {
        let _ = writer.write_all(request.as_bytes());
    });
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let _ = upload.join();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[test]
fn bad_requests_get_the_right_4xx_in_openai_shape_and_the_server_stays_healthy() {
    let s = Server::start(&["--allow-untrained-sharing", "--max-body-bytes", "1048576"]);
    let cases = battery();
    assert!(cases.len() >= 40);
    let rss_before = s.rss_kib();
    // Three rounds: repeated bad input must not grow memory or wedge anything.
    for _ in 0..3 {
        for c in &cases {
            let r = s
                .client
                .post(s.url(c.path))
                .header("content-type", c.content_type)
                .body(c.body.clone())
                .send()
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().unwrap();
            assert_eq!(status, c.status, "{}: {text}", c.name);
            let v: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{}: not JSON: {text}", c.name));
            let e = &v["error"];
            assert!(
                e["message"].is_string() && e["type"].is_string(),
                "{}: {v}",
                c.name
            );
            assert!(
                e.get("param").is_some() && e.get("code").is_some(),
                "{}: {v}",
                c.name
            );
            if let Some(p) = c.param {
                assert_eq!(e["param"], p, "{}: {v}", c.name);
            }
        }
    }
    // A 10 MB body is refused with 413 before it is parsed. The server may answer before the
    // upload ends, so the upload runs on its own thread and may see the connection close.
    let (status, body) = post_raw(
        &s.base,
        "/v1/completions",
        &format!("{{\"prompt\": \"{}\"}}", "a".repeat(10 << 20)),
    );
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    // Still healthy and serving, memory bounded.
    assert_eq!(s.client.get(s.url("/health")).send().unwrap().status(), 200);
    let (status, _) = s.post_json(
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 2}),
    );
    assert_eq!(status, 200);
    let growth = s.rss_kib().saturating_sub(rss_before);
    assert!(growth < 200 * 1024, "RSS grew by {growth} KiB");
    s.wait_metric("epas_requests_running", 0.0);
}

#[test]
fn half_of_32_streams_disconnect_and_everything_is_freed() {
    let s = Server::start(&["--allow-untrained-sharing", "--max-batch-size", "64"]);
    let base = s.base.clone();
    let expected = {
        let (_, r) = s.post_json("/v1/completions", &json!({"prompt": "The economy", "max_tokens": 24, "temperature": 0, "ignore_eos": true}));
        r["choices"][0]["text"].as_str().unwrap().to_string()
    };
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap();
                let body = json!({
                    "prompt": "The economy", "max_tokens": 24, "temperature": 0, "ignore_eos": true,
                    "stream": true, "sharing_ratio": if i % 4 == 0 { 0.5 } else { 0.0 },
                });
                let mut r = client
                    .post(format!("{base}/v1/completions"))
                    .json(&body)
                    .send()
                    .unwrap();
                assert_eq!(r.status(), 200);
                if i % 2 == 1 {
                    let mut buf = [0u8; 256];
                    let _ = r.read(&mut buf);
                    drop(r);
                    return None;
                }
                let (events, done) = read_sse(r);
                assert!(done);
                Some((i, stream_text(&events)))
            })
        })
        .collect();
    for h in handles {
        if let Some((i, text)) = h.join().unwrap() {
            if i % 4 != 0 {
                assert_eq!(text, expected, "stream {i}");
            } else {
                assert!(!text.is_empty());
            }
        }
    }
    s.wait_metric("epas_requests_running", 0.0);
    s.wait_metric("epas_kv_cache_blocks{state=\"used\"}", 0.0);
    let cancelled: f64 = ["0.00", "0.50"]
        .iter()
        .filter_map(|r| {
            s.metric(&format!(
                "epas_requests_cancelled_total{{sharing_ratio=\"{r}\"}}"
            ))
        })
        .sum();
    assert!(
        cancelled >= 1.0,
        "some of the 16 dropped streams were still running when cut"
    );
}

#[test]
fn a_burst_over_the_queue_gets_429_with_retry_after_never_a_broken_stream() {
    let s = Server::start(&["--max-waiting", "2", "--max-batch-size", "1"]);
    let base = s.base.clone();
    let handles: Vec<_> = (0..12)
        .map(|_| {
            let base = base.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let body = json!({"prompt": "Hello", "max_tokens": 16, "ignore_eos": true, "stream": true});
                let r = client.post(format!("{base}/v1/completions")).json(&body).send().unwrap();
                let status = r.status().as_u16();
                if status == 429 {
                    assert_eq!(r.headers()["retry-after"], "1");
                    let v: serde_json::Value = r.json().unwrap();
                    assert_eq!(v["error"]["code"], "queue_full");
                    return 429;
                }
                assert_eq!(status, 200);
                let (events, done) = read_sse(r);
                assert!(done, "a 200 stream ended without [DONE]");
                assert!(!stream_text(&events).is_empty());
                200
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let rejected = statuses.iter().filter(|&&s| s == 429).count();
    assert!(rejected >= 1, "{statuses:?}");
    // At least the first two fit the queue (more when the engine admits some in between).
    assert!(
        statuses.iter().filter(|&&s| s == 200).count() >= 2,
        "{statuses:?}"
    );
    assert_eq!(
        s.metric("epas_requests_rejected_total{reason=\"queue_full\"}"),
        Some(rejected as f64)
    );
    assert_eq!(
        s.metric("epas_requests_total{status=\"429\"}"),
        Some(rejected as f64),
        "each 429 counted once"
    );
}

type StreamHandle = std::thread::JoinHandle<(Option<serde_json::Value>, bool)>;

/// Starts `count` streamed completions of `max_tokens` tokens on their own threads; each
/// returns its `completion_tokens` (from the usage chunk) and whether `[DONE]` came.
fn start_streams(base: &str, count: usize, max_tokens: usize) -> Vec<StreamHandle> {
    (0..count)
        .map(|_| {
            let base = base.to_string();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(300))
                    .build()
                    .unwrap();
                let body = json!({
                    "prompt": "Hello", "max_tokens": max_tokens, "ignore_eos": true,
                    "stream": true, "stream_options": {"include_usage": true},
                });
                let r = client
                    .post(format!("{base}/v1/completions"))
                    .json(&body)
                    .send()
                    .unwrap();
                assert_eq!(r.status(), 200);
                let (events, done) = read_sse(r);
                let generated = events
                    .last()
                    .map(|e| e["usage"]["completion_tokens"].clone());
                (generated, done)
            })
        })
        .collect()
}

/// Polls `/health` until it answers 503 (up to 10 s): the server has seen the signal.
fn wait_draining(s: &Server) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.client.get(s.url("/health")).send().unwrap();
        if r.status() == 503 {
            return r.json().unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/health stayed {}",
            r.status()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a server and `streams` streams of `max_tokens` tokens, sends SIGTERM once they all
/// run and waits until the server drains; returns `/health`'s body as well.
fn drain_while_streaming(
    streams: usize,
    max_tokens: usize,
) -> (Server, Vec<StreamHandle>, serde_json::Value) {
    let s = Server::start(&[]);
    let handles = start_streams(&s.base, streams, max_tokens);
    s.wait_metric("epas_requests_running", streams as f64);
    s.sigterm();
    let health = wait_draining(&s);
    (s, handles, health)
}

#[test]
fn sigterm_keeps_the_listener_for_503s_while_the_streams_finish_then_exits_zero() {
    // Long enough that the streams are still running while the checks below run.
    let (mut s, handles, health) = drain_while_streaming(3, 256);
    // The listener stays open: liveness says draining, new work gets a 503 to retry elsewhere.
    assert_eq!(health, json!({"status": "draining"}));
    let r = s.post(
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 2}),
    );
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
    let e: serde_json::Value = r.json().unwrap();
    assert_eq!(e["error"]["code"], "draining", "{e}");
    assert_eq!(
        s.metric("epas_requests_running"),
        Some(3.0),
        "the streams were still running during the checks"
    );
    assert_eq!(
        s.metric("epas_requests_rejected_total{reason=\"draining\"}"),
        Some(1.0)
    );
    assert_eq!(s.metric("epas_requests_total{status=\"503\"}"), Some(1.0));

    for h in handles {
        let (generated, done) = h.join().unwrap();
        assert!(done, "stream cut by shutdown");
        assert_eq!(
            generated,
            Some(json!(256)),
            "every stream ran to its max_tokens"
        );
    }
    let status = s.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_second_sigterm_during_the_drain_exits_at_once_with_status_1() {
    // Far more tokens than the test waits for: only the second signal can end the process.
    let (mut s, _streams, _) = drain_while_streaming(2, 4000);
    s.sigterm();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 10 s after the second SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    let stderr = s.stderr_lines().join("\n");
    assert!(stderr.contains("second shutdown signal"), "{stderr}");
}

#[test]
fn drain_grace_keeps_the_port_answering_503_after_sigterm_then_exits_zero() {
    let mut s = Server::start(&["--drain-grace", "2"]);
    let signalled = std::time::Instant::now();
    s.sigterm();
    let health = wait_draining(&s);
    assert_eq!(health, json!({"status": "draining"}));
    // Nothing runs, yet the port stays open for the grace: a router polling /ready sees 503.
    std::thread::sleep(Duration::from_millis(800));
    let ready = s.client.get(s.url("/ready")).send().unwrap();
    assert_eq!(ready.status(), 503);
    let r = s.post(
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 2}),
    );
    assert_eq!(r.status(), 503);
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "the checks outlasted the grace"
    );
    let status = s.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "exited {:?} after the signal, before the grace",
        signalled.elapsed()
    );
}
