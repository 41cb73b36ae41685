//! `epas_requests_total` and `epas_requests_rejected_total` count every generation request
//! exactly once, whichever layer answered it (authentication, body limit, timeout, handler).

mod support;

use serde_json::json;
use support::*;

const KEY: &str = "secret";

/// A POST to `path`, with the API key when `authorized`.
fn post_to(s: &Server, path: &str, authorized: bool) -> reqwest::blocking::RequestBuilder {
    let r = s.client.post(s.url(path));
    if authorized {
        r.bearer_auth(KEY)
    } else {
        r
    }
}

/// POSTs `body` with `content_type` to `path`; the status.
fn post(s: &Server, path: &str, authorized: bool, content_type: &str, body: String) -> u16 {
    let r = post_to(s, path, authorized)
        .header("content-type", content_type)
        .body(body);
    r.send().unwrap().status().as_u16()
}

fn post_json(s: &Server, path: &str, authorized: bool, body: serde_json::Value) -> u16 {
    post(s, path, authorized, "application/json", body.to_string())
}

#[test]
fn every_generation_request_is_counted_once_by_its_final_status_and_refusal_reason() {
    let s = Server::start(&[
        "--api-key",
        KEY,
        "--max-body-bytes",
        "1024",
        "--request-timeout",
        "1",
    ]);
    let completion = json!({"prompt": "Hi", "max_tokens": 2});
    let chat = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});

    // Refused by authentication (twice), the body limit, the content type and validation.
    assert_eq!(
        post_json(&s, "/v1/completions", false, completion.clone()),
        401
    );
    assert_eq!(post_json(&s, "/v1/chat/completions", false, chat), 401);
    let too_large = json!({"prompt": "a".repeat(2048)});
    assert_eq!(post_json(&s, "/v1/completions", true, too_large), 413);
    let plain = completion.to_string();
    assert_eq!(post(&s, "/v1/completions", true, "text/plain", plain), 415);
    let zero = json!({"prompt": "Hi", "max_tokens": 0});
    assert_eq!(post_json(&s, "/v1/completions", true, zero), 400);
    let unknown_model = json!({"prompt": "Hi", "model": "gpt-4"});
    assert_eq!(post_json(&s, "/v1/completions", true, unknown_model), 404);

    // Ran, but past the 1 s request timeout: thousands of tokens take far longer on a CPU.
    let long = json!({"prompt": "Hello", "max_tokens": 4000, "ignore_eos": true});
    let r = post_to(&s, "/v1/completions", true)
        .json(&long)
        .send()
        .unwrap();
    assert_eq!(r.status(), 408);
    let e: serde_json::Value = r.json().unwrap();
    assert_eq!(e["error"]["type"], "timeout", "in OpenAI's shape: {e}");

    // A stream has its status once its headers are out, so the timeout does not apply.
    let stream = json!({"prompt": "Hi", "max_tokens": 2, "stream": true});
    let r = post_to(&s, "/v1/completions", true)
        .json(&stream)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(read_sse(r).1);

    // Not generation requests: never counted.
    assert_eq!(
        s.client.get(s.url("/v1/models")).send().unwrap().status(),
        401
    );
    assert_eq!(
        post_json(&s, "/tokenize", false, json!({"prompt": "Hi"})),
        401
    );

    for (status, count) in [
        ("200", 1.0),
        ("400", 1.0),
        ("401", 2.0),
        ("404", 1.0),
        ("408", 1.0),
        ("413", 1.0),
        ("415", 1.0),
    ] {
        assert_eq!(
            s.metric(&format!("epas_requests_total{{status=\"{status}\"}}")),
            Some(count),
            "status {status}"
        );
    }
    for (reason, count) in [
        ("unauthorized", 2.0),
        ("invalid", 4.0),
        ("queue_full", 0.0),
        ("draining", 0.0),
        ("loading", 0.0),
    ] {
        assert_eq!(
            s.metric(&format!(
                "epas_requests_rejected_total{{reason=\"{reason}\"}}"
            )),
            Some(count),
            "reason {reason}"
        );
    }
    // The timed-out request was cancelled in the engine, not left running.
    s.wait_metric("epas_requests_running", 0.0);
}
