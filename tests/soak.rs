//! Soak: the real server on SmolLM2 with a KV pool small enough to force preemption, under a
//! seeded random mix for a bounded time (`EPAS_SOAK_SECONDS`, default 120): streamed and plain
//! completions and chats, `n` up to 4, sharing ratios 0 to 0.5, prompts up to ~800 tokens, 10%
//! of clients hanging up early and 10% bad requests. Afterwards every request was answered
//! exactly once (success or a well-formed error), no request took too long, nothing is left
//! running or holding blocks, memory did not grow without bound, and the server still serves.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use support::{Server, MODEL};

const CLIENTS: u64 = 12;
/// No answer may take longer (the slowest request is bounded, not just eventually served).
const SLOWEST_ALLOWED: Duration = Duration::from_secs(90);

const WORDS: &[&str] = &[
    "the", "union", "people", "congress", "nation", "law", "year", "economy", "work", "power",
    "country", "world", "peace", "freedom", "tax", "budget", "school", "health", "energy",
    "future", "state", "duty", "trade", "justice", "children", "families", "hope", "strength",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Completion,
    CompletionStream,
    Chat,
    ChatStream,
    HungUp,
    Bad,
}

/// How one request ended, as the client saw it.
#[derive(Debug, Default)]
struct Tally {
    by_kind: BTreeMap<String, usize>,
    by_status: BTreeMap<u16, usize>,
    generated_tokens: u64,
    slowest: Duration,
    problems: Vec<String>,
}

fn words(rng: &mut StdRng, count: usize) -> String {
    (0..count)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn good_body(rng: &mut StdRng, chat: bool, stream: bool) -> Value {
    // Mostly short prompts, some long ones (up to ~800 tokens).
    let length = if rng.random_bool(0.15) {
        rng.random_range(300..600)
    } else {
        rng.random_range(5..120)
    };
    let text = words(rng, length);
    let ratio = [0.0, 0.25, 0.5][rng.random_range(0..3)];
    let temperature = [0.0, 0.7][rng.random_range(0..2)];
    let mut body = json!({
        "model": MODEL,
        "max_tokens": rng.random_range(1..64),
        "n": rng.random_range(1..=4),
        "sharing_ratio": ratio,
        "temperature": temperature,
        "seed": rng.random_range(0..1000),
        "stream": stream,
    });
    if chat {
        body["messages"] = json!([{"role": "user", "content": text}]);
    } else {
        body["prompt"] = json!(text);
    }
    if stream && rng.random_bool(0.5) {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

fn bad_body(rng: &mut StdRng) -> (Value, &'static str) {
    match rng.random_range(0..6) {
        0 => (json!({"prompt": "x", "temperature": 9}), "temperature"),
        1 => (json!({"prompt": "x", "best_friend": 1}), "best_friend"),
        2 => (json!({"messages": []}), "messages"),
        3 => (json!({"prompt": "x", "max_tokens": 100000}), "max_tokens"),
        4 => (
            json!({"prompt": "x", "sharing_ratio": 0.99}),
            "sharing_ratio",
        ),
        _ => (json!({"prompt": 5}), "prompt"),
    }
}

/// Checks an error body has OpenAI's shape.
fn well_formed_error(body: &Value) -> bool {
    body["error"]["message"].is_string() && body["error"]["type"].is_string()
}

/// Reads an SSE body to its end; `Err` says what was wrong with it.
fn read_stream(response: reqwest::blocking::Response) -> Result<u64, String> {
    let mut done = 0;
    let mut tokens = 0;
    let mut errors = 0;
    for line in BufReader::new(response).lines() {
        let line = line.map_err(|e| format!("stream broke: {e}"))?;
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done += 1;
            continue;
        }
        if done > 0 {
            return Err("data after [DONE]".into());
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| format!("bad chunk: {e}"))?;
        if chunk.get("error").is_some() {
            errors += 1;
        }
        if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
            tokens = n;
        }
    }
    match (done, errors) {
        (1, 0) => Ok(tokens),
        _ => Err(format!("{done} [DONE] and {errors} errors")),
    }
}

fn one_request(
    server: &Server,
    client: &reqwest::blocking::Client,
    rng: &mut StdRng,
    t: &mut Tally,
) {
    let roll = rng.random_range(0..100);
    let kind = match roll {
        0..10 => Kind::Bad,
        10..20 => Kind::HungUp,
        20..40 => Kind::Completion,
        40..60 => Kind::CompletionStream,
        60..80 => Kind::Chat,
        _ => Kind::ChatStream,
    };
    *t.by_kind.entry(format!("{kind:?}")).or_default() += 1;
    let started = Instant::now();
    let outcome: Result<(u16, u64), String> = match kind {
        Kind::Bad => {
            let (body, field) = bad_body(rng);
            let path = if body.get("messages").is_some() {
                "/v1/chat/completions"
            } else {
                "/v1/completions"
            };
            let r = client.post(server.url(path)).json(&body).send();
            match r {
                Err(e) => Err(format!("bad request ({field}) got no answer: {e}")),
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body: Value = r.json().unwrap_or(Value::Null);
                    if status == 400 && well_formed_error(&body) {
                        Ok((status, 0))
                    } else {
                        Err(format!("bad request ({field}): {status} {body}"))
                    }
                }
            }
        }
        Kind::HungUp => {
            let chat = rng.random_bool(0.5);
            let mut body = good_body(rng, chat, true);
            body["max_tokens"] = json!(60);
            let path = if body.get("messages").is_some() {
                "/v1/chat/completions"
            } else {
                "/v1/completions"
            };
            match client.post(server.url(path)).json(&body).send() {
                Err(e) => Err(format!("hang-up request got no answer: {e}")),
                Ok(r) => {
                    let status = r.status().as_u16();
                    // Read the first line of the stream, then drop the connection.
                    let mut reader = BufReader::new(r);
                    let mut line = String::new();
                    let _ = reader.read_line(&mut line);
                    Ok((status, 0))
                }
            }
        }
        _ => {
            let chat = matches!(kind, Kind::Chat | Kind::ChatStream);
            let stream = matches!(kind, Kind::CompletionStream | Kind::ChatStream);
            let body = good_body(rng, chat, stream);
            let path = if chat {
                "/v1/chat/completions"
            } else {
                "/v1/completions"
            };
            match client.post(server.url(path)).json(&body).send() {
                Err(e) => Err(format!("{kind:?} got no answer: {e}")),
                Ok(r) if r.status() != 200 => {
                    let status = r.status().as_u16();
                    let body: Value = r.json().unwrap_or(Value::Null);
                    Err(format!("{kind:?}: {status} {body}"))
                }
                Ok(r) if stream => read_stream(r).map(|tokens| (200, tokens)),
                Ok(r) => match r.json::<Value>() {
                    Err(e) => Err(format!("{kind:?}: bad JSON {e}")),
                    Ok(body) => {
                        let n = body["choices"].as_array().map_or(0, Vec::len);
                        match body["usage"]["completion_tokens"].as_u64() {
                            Some(tokens) if n > 0 => Ok((200, tokens)),
                            _ => Err(format!("{kind:?}: incomplete answer {body}")),
                        }
                    }
                },
            }
        }
    };
    let took = started.elapsed();
    t.slowest = t.slowest.max(took);
    match outcome {
        Ok((status, tokens)) => {
            *t.by_status.entry(status).or_default() += 1;
            t.generated_tokens += tokens;
        }
        Err(problem) => t.problems.push(problem),
    }
}

#[test]
fn a_mixed_load_against_a_small_kv_pool_leaves_the_server_clean() {
    let seconds: u64 = std::env::var("EPAS_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let server = Arc::new(Server::start(&[
        "--kv-cache-tokens",
        "2048",
        "--allow-untrained-sharing",
    ]));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let rss_at_warmup = Arc::new(Mutex::new(None));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (server, tally, rss) = (server.clone(), tally.clone(), rss_at_warmup.clone());
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(1000 + c);
                let client = reqwest::blocking::Client::builder()
                    .timeout(SLOWEST_ALLOWED + Duration::from_secs(30))
                    .build()
                    .unwrap();
                while Instant::now() < deadline {
                    let mut t = Tally::default();
                    one_request(&server, &client, &mut rng, &mut t);
                    let mut all = tally.lock().unwrap();
                    for (k, v) in t.by_kind {
                        *all.by_kind.entry(k).or_default() += v;
                    }
                    for (k, v) in t.by_status {
                        *all.by_status.entry(k).or_default() += v;
                    }
                    all.generated_tokens += t.generated_tokens;
                    all.slowest = all.slowest.max(t.slowest);
                    all.problems.extend(t.problems);
                    if c == 0 && started.elapsed() > Duration::from_secs(seconds / 4) {
                        rss.lock().unwrap().get_or_insert_with(|| server.rss_kib());
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let elapsed = started.elapsed();
    // Hung-up streams are cancelled at the next step; everything drains within seconds.
    server.wait_metric("epas_requests_running", 0.0);
    server.wait_metric("epas_requests_waiting", 0.0);
    server.wait_metric("epas_kv_cache_blocks{state=\"used\"}", 0.0);
    let final_answer = server.post_json(
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "The state of the union is", "max_tokens": 8}),
    );
    let rss_end = server.rss_kib();
    let t = tally.lock().unwrap();
    let answered: usize = t.by_status.values().sum();
    let preemptions = server.metric("epas_preemptions_total").unwrap_or(0.0);
    eprintln!(
        "soak {:.0} s: {answered} answered of {} ({:?}), statuses {:?}, {} generated tokens \
         ({:.0}/s), {preemptions} preemptions, slowest {:.1} s, RSS {:?} -> {rss_end} KiB",
        elapsed.as_secs_f64(),
        t.by_kind.values().sum::<usize>(),
        t.by_kind,
        t.by_status,
        t.generated_tokens,
        t.generated_tokens as f64 / elapsed.as_secs_f64(),
        t.slowest.as_secs_f64(),
        rss_at_warmup.lock().unwrap(),
    );
    assert!(
        t.problems.is_empty(),
        "{} problems: {:#?}",
        t.problems.len(),
        t.problems
    );
    assert_eq!(answered, t.by_kind.values().sum::<usize>());
    assert!(
        answered >= 50,
        "too few requests to mean anything: {answered}"
    );
    assert!(
        t.slowest < SLOWEST_ALLOWED,
        "slowest request {:?}",
        t.slowest
    );
    assert!(preemptions > 0.0, "the pool was meant to force preemption");
    assert_eq!(final_answer.0, 200, "{}", final_answer.1);
    let warm = *rss_at_warmup.lock().unwrap();
    if let Some(warm) = warm {
        assert!(
            rss_end < warm + 150 * 1024,
            "RSS grew from {warm} KiB to {rss_end} KiB"
        );
    }
}
