//! The built `epas-loadtest` binary against a real `epas serve` (closed and open loop, ratio
//! mixes and sweeps, a full queue, speculative-decoding counts) and against fake servers that
//! break streams or stall.
//! `cargo test --release --workspace` builds both binaries before running this file.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::*;

/// `epas-loadtest` is another package's binary: it sits next to `epas` in the target folder.
fn loadtest_bin() -> PathBuf {
    let epas = PathBuf::from(env!("CARGO_BIN_EXE_epas"));
    let bin = epas.with_file_name(format!("epas-loadtest{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: `cargo build --release -p epas-loadtest` (cargo test --release --workspace builds it)",
        bin.display()
    );
    bin
}

/// Runs the tool with `args` plus `--json`, returns its exit status and the parsed report.
fn run_loadtest(dir: &Path, name: &str, args: &[&str]) -> (i32, Value) {
    let json = dir.join(format!("{name}.json"));
    let out = Command::new(loadtest_bin())
        .args(args)
        .args(["--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let code = out.status.code().unwrap_or(-1);
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("no report ({e}), exit {code}: {stderr}"));
    (code, serde_json::from_str(&text).unwrap())
}

fn ratio_rows(run: &Value) -> Vec<Option<f64>> {
    run["by_ratio"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sharing_ratio"].as_f64())
        .collect()
}

/// `sent = completed + failed` overall and summed over the ratio rows.
fn assert_counts_add_up(run: &Value) {
    let o = &run["overall"];
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap();
    assert_eq!(n(o, "sent"), n(o, "completed") + n(o, "failed"), "{run}");
    let rows = run["by_ratio"].as_array().unwrap();
    for k in ["sent", "completed", "failed", "output_tokens"] {
        assert_eq!(
            rows.iter().map(|r| n(r, k)).sum::<u64>(),
            n(o, k),
            "{k}: {run}"
        );
    }
    let errors: u64 = o["errors"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(errors, n(o, "failed"), "{run}");
}

#[test]
fn closed_and_open_loop_runs_against_epas_serve() {
    // One kernel thread: the machine may be busy, and spinning pools suffer most from that.
    let s = Server::start(&[
        "--allow-untrained-sharing",
        "--no-prefix-cache",
        "--threads",
        "1",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (md, png) = (dir.path().join("r.md"), dir.path().join("r.png"));
    let common = [
        "--url",
        &s.base,
        "--prompt-tokens",
        "8",
        "--max-tokens",
        "4",
        "--ignore-eos",
        "--no-progress",
    ];

    // Closed loop, two clients, a 50/50 ratio mix; the model name comes from /v1/models.
    let mut args = common.to_vec();
    args.extend([
        "--concurrency",
        "2",
        "--requests",
        "4",
        "--ratios",
        "0:1,0.5:1",
        "--markdown",
        md.to_str().unwrap(),
        "--plot",
        png.to_str().unwrap(),
        "--slo-ttft-ms",
        "60000",
    ]);
    let (code, report) = run_loadtest(dir.path(), "closed", &args);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["sources"][0]["model"], MODEL);
    let run = &report["runs"][0];
    assert_eq!(run["load"]["mode"], "closed");
    assert_eq!(run["load"]["concurrency"], 2);
    assert_counts_add_up(run);
    let o = &run["overall"];
    assert_eq!(
        (o["sent"].as_u64(), o["completed"].as_u64()),
        (Some(4), Some(4))
    );
    // ignore_eos: every request generated max_tokens, as the server's usage says.
    assert_eq!(o["output_tokens"], 16);
    assert_eq!(o["usage_reported"], 4);
    assert!(o["output_throughput"].as_f64().unwrap() > 0.0);
    assert_eq!(o["ttft_ms"]["count"], 4);
    assert!(o["itl_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert_eq!(o["goodput"]["fraction"], 1.0);
    assert_eq!(ratio_rows(run), vec![Some(0.0), Some(0.5)]);
    // Speculative decoding is off: the server has no such counters, the report no such field.
    assert!(run.get("speculation").is_none(), "{run}");
    // The ratios really went to the server: its per-ratio token counters agree.
    for (row, label) in run["by_ratio"]
        .as_array()
        .unwrap()
        .iter()
        .zip(["0.00", "0.50"])
    {
        let served = s.metric(&format!(
            "epas_generation_tokens_total{{sharing_ratio=\"{label}\"}}"
        ));
        assert_eq!(
            served.unwrap_or(0.0),
            row["output_tokens"].as_f64().unwrap()
        );
    }
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(md.contains("| c=2 | 0.5 |"), "{md}");
    assert!(md.contains("| c=2 | all |"), "{md}");
    let png = std::fs::read(&png).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // Open loop at 20 req/s, ratios 0 and 0.5 swept side by side, chat endpoint.
    let mut args = common.to_vec();
    args.extend([
        "--model",
        MODEL,
        "--rate",
        "20",
        "--requests",
        "3",
        "--ratio-sweep",
        "0,0.5",
        "--endpoint",
        "chat",
    ]);
    let (code, report) = run_loadtest(dir.path(), "open", &args);
    assert_eq!(code, 0, "{report}");
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for (run, ratio) in runs.iter().zip([0.0, 0.5]) {
        assert_eq!(run["load"]["mode"], "open");
        assert_eq!(run["load"]["rate"], 20.0);
        assert_counts_add_up(run);
        assert_eq!(run["overall"]["completed"], 3, "{run}");
        assert_eq!(ratio_rows(run), vec![Some(ratio)]);
    }
}

#[test]
fn speculative_decoding_counts_come_from_the_server_per_run() {
    let s = Server::start(&[
        "--speculative",
        "ngram",
        "--no-prefix-cache",
        "--threads",
        "1",
    ]);
    let dir = tempfile::tempdir().unwrap();
    // A prompt with newlines (so only a JSONL file can carry it) that invites copying.
    let prompt = "Copy the list.\n".to_string()
        + &"red green blue yellow purple orange\n".repeat(5)
        + "Copy:\nred green";
    let prompts = dir.path().join("copy.jsonl");
    std::fs::write(&prompts, format!("{}\n", serde_json::json!(prompt))).unwrap();
    let md = dir.path().join("spec.md");
    let common = [
        "--url",
        &s.base,
        "--prompts",
        prompts.to_str().unwrap(),
        "--requests",
        "2",
        "--max-tokens",
        "24",
        "--ignore-eos",
        "--no-progress",
    ];
    let (_, tokenized) = s.post_json("/tokenize", &serde_json::json!({ "prompt": prompt }));
    let prompt_tokens = tokenized["count"].as_u64().unwrap();
    let draft_tokens = "epas_spec_decode_draft_tokens_total{sharing_ratio=\"0.00\"}";

    let mut args = common.to_vec();
    args.extend(["--markdown", md.to_str().unwrap()]);
    let (code, report) = run_loadtest(dir.path(), "drafts", &args);
    assert_eq!(code, 0, "{report}");
    let run = &report["runs"][0];
    // The whole prompt went out, newlines and all.
    assert_eq!(run["overall"]["prompt_tokens"], 2 * prompt_tokens, "{run}");
    let spec = &run["speculation"];
    let n = |v: &Value| v.as_u64().unwrap();
    let (drafted, accepted) = (
        n(&spec["overall"]["draft_tokens"]),
        n(&spec["overall"]["accepted_tokens"]),
    );
    assert!(accepted > 0 && accepted <= drafted, "{spec}");
    assert!(n(&spec["overall"]["drafts"]) > 0, "{spec}");
    let rate = spec["overall"]["acceptance_rate"].as_f64().unwrap();
    assert!(
        (rate - accepted as f64 / drafted as f64).abs() < 1e-12,
        "{spec}"
    );
    let labels: Vec<&String> = spec["by_ratio"].as_object().unwrap().keys().collect();
    assert_eq!(labels, ["0.00"], "{spec}");
    assert_eq!(spec["by_ratio"]["0.00"], spec["overall"]);
    // Only this run drafted on this server: its counts are the server's totals.
    assert_eq!(s.metric(draft_tokens), Some(drafted as f64));
    let md = std::fs::read_to_string(&md).unwrap();
    let row = format!(
        "| c=1 | 0.00 | {} | {drafted} | {accepted} |",
        n(&spec["overall"]["drafts"])
    );
    assert!(
        md.contains("Speculative decoding") && md.contains(&row),
        "{md}"
    );

    // The same requests opting out: the counters exist and did not move.
    let mut args = common.to_vec();
    args.extend(["--extra-body", r#"{"speculative": false}"#]);
    let (code, report) = run_loadtest(dir.path(), "no-drafts", &args);
    assert_eq!(code, 0, "{report}");
    let spec = &report["runs"][0]["speculation"];
    assert_eq!(spec["overall"]["draft_tokens"], 0, "{spec}");
    assert!(spec["overall"]["acceptance_rate"].is_null(), "{spec}");
    assert!(spec["by_ratio"].as_object().unwrap().is_empty(), "{spec}");
    assert_eq!(s.metric(draft_tokens), Some(drafted as f64));
}

#[test]
fn a_full_queue_is_counted_as_http_429() {
    let s = Server::start(&[
        "--max-waiting",
        "1",
        "--max-batch-size",
        "1",
        "--threads",
        "1",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--url",
        &s.base,
        "--model",
        MODEL,
        "--concurrency",
        "8",
        "--requests",
        "12",
        "--prompt-tokens",
        "8",
        "--max-tokens",
        "16",
        "--ignore-eos",
        "--no-progress",
    ];
    let (code, report) = run_loadtest(dir.path(), "queue", &args);
    let run = &report["runs"][0];
    assert_counts_add_up(run);
    let o = &run["overall"];
    assert_eq!(o["sent"], 12);
    let rejected = o["errors"]["http_429"].as_u64().unwrap_or(0);
    assert!(rejected >= 1, "{run}");
    assert_eq!(rejected, o["failed"].as_u64().unwrap(), "only 429s: {run}");
    assert_eq!(code, if o["completed"] == 0 { 3 } else { 0 });
    assert_eq!(
        s.metric("epas_requests_rejected_total{reason=\"queue_full\"}"),
        Some(rejected as f64)
    );
    assert!(run["error_examples"]["http_429"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

/// A one-route fake server: reads each request, then lets `answer` write whatever it wants.
/// It has no `/metrics` (a 404, as servers without metrics answer).
fn fake_server(answer: fn(&mut TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || match read_request(&mut conn).as_deref() {
                Some(line) if line.starts_with("GET /metrics ") => answer_404(&mut conn),
                Some(_) => answer(&mut conn),
                None => {}
            });
        }
    });
    base
}

/// Reads one request; returns its request line (`POST /v1/completions HTTP/1.1`).
fn read_request(conn: &mut TcpStream) -> Option<String> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(request_line.trim_end().to_string())
}

fn answer_404(conn: &mut TcpStream) {
    let _ = write!(
        conn,
        "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
}

fn answer_429(conn: &mut TcpStream) {
    let body = r#"{"error":{"message":"queue full","type":"server_busy","param":null,"code":"queue_full"}}"#;
    let _ = write!(
        conn,
        "HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Two chunks of an SSE stream, then the connection closes without the final chunk.
fn answer_broken_stream(conn: &mut TcpStream) {
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    for text in ["Hel", "lo"] {
        let event = format!("data: {{\"choices\":[{{\"index\":0,\"text\":\"{text}\"}}]}}\n\n");
        let _ = write!(conn, "{:x}\r\n{event}\r\n", event.len());
        let _ = conn.flush();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

/// Closes the first connection without answering (as a server that just dropped a kept-alive
/// connection), then streams a complete answer on every later one.
fn answer_after_one_drop(conn: &mut TcpStream) {
    static CONNECTIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    if CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
        let _ = conn.shutdown(std::net::Shutdown::Both);
        return;
    }
    let body =
        "data: {\"choices\":[{\"index\":0,\"text\":\"Hi\",\"finish_reason\":\"length\"}]}\n\n\
                data: [DONE]\n\n";
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn answer_never(conn: &mut TcpStream) {
    std::thread::sleep(std::time::Duration::from_secs(30));
    let _ = conn.flush();
}

#[test]
fn a_connection_closed_before_the_answer_is_retried_once() {
    let dir = tempfile::tempdir().unwrap();
    let base = fake_server(answer_after_one_drop);
    let args = [
        "--url",
        &base,
        "--model",
        "fake",
        "--requests",
        "2",
        "--no-progress",
    ];
    let (code, report) = run_loadtest(dir.path(), "retry", &args);
    assert_eq!(code, 0, "{report}");
    let o = &report["runs"][0]["overall"];
    assert_eq!(
        (o["completed"].as_u64(), o["failed"].as_u64()),
        (Some(2), Some(0)),
        "{o}"
    );
    // No usage in these streams: one text chunk is one token.
    assert_eq!(o["output_tokens"], 2);
    assert_eq!(o["usage_reported"], 0);
    // No /metrics: no speculative-decoding counts, and no error.
    assert!(report["runs"][0].get("speculation").is_none(), "{report}");
}

#[test]
fn fake_servers_that_refuse_break_or_stall_are_counted_as_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (name, answer, kind, extra) in [
        ("refuse", answer_429 as fn(&mut TcpStream), "http_429", None),
        ("broken", answer_broken_stream, "broken_stream", None),
        ("stall", answer_never, "timeout", Some("1")),
    ] {
        let base = fake_server(answer);
        let mut args = vec![
            "--url",
            &base,
            "--model",
            "fake",
            "--concurrency",
            "3",
            "--requests",
            "5",
            "--no-progress",
        ];
        if let Some(t) = extra {
            args.extend(["--timeout", t]);
        }
        let started = std::time::Instant::now();
        let (code, report) = run_loadtest(dir.path(), name, &args);
        assert_eq!(code, 3, "{name}: {report}");
        assert!(started.elapsed().as_secs() < 20, "{name} took too long");
        let run = &report["runs"][0];
        assert_counts_add_up(run);
        assert_eq!(run["overall"]["sent"], 5, "{name}: {run}");
        assert_eq!(run["overall"]["errors"][kind], 5, "{name}: {run}");
    }
}
