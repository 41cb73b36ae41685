//! Starts the real `epas serve` binary on a free port for end-to-end tests.
#![allow(dead_code)]

pub mod tiny_run;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn model_path() -> PathBuf {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "run scripts/fetch-models.sh first");
    p
}

pub const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";

pub struct Server {
    pub child: Child,
    pub base: String,
    pub client: reqwest::blocking::Client,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Server {
    /// Starts `epas serve` on SmolLM2 with `extra` flags and waits (up to 60 s) for `/health` to
    /// say ok.
    pub fn start(extra: &[&str]) -> Server {
        Self::start_model(model_path().to_str().unwrap(), extra)
    }

    /// As [`Server::start`] with `--model model` (a path or `builtin`).
    pub fn start_model(model: &str, extra: &[&str]) -> Server {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_epas"))
            .args(["serve", "--model", model, "--port", &port.to_string()])
            .args(extra)
            .env("EPAS_THREADS", "2")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = server.client.get(server.url("/health")).send() {
                if r.status() == 200 {
                    return server;
                }
            }
            assert!(Instant::now() < deadline, "server did not become healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::blocking::Response {
        self.client.post(self.url(path)).json(body).send().unwrap()
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let r = self.post(path, body);
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(serde_json::Value::Null))
    }

    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.client.get(self.url(path)).send().unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(serde_json::Value::Null))
    }

    /// Sends SIGTERM: the server starts to drain.
    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
    }

    pub fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// The value of one metric line, e.g. `epas_requests_running` or
    /// `epas_generation_tokens_total{sharing_ratio="0.50"}`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Polls `series` until it equals `value` (up to 30 s).
    pub fn wait_metric(&self, series: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.metric(series).unwrap_or(f64::NAN) != value {
            assert!(
                Instant::now() < deadline,
                "{series} stayed at {:?}",
                self.metric(series)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    pub fn stderr_lines(&mut self) -> Vec<String> {
        let err = self.child.stderr.take().unwrap();
        BufReader::new(err).lines().map_while(Result::ok).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads an SSE response to its end: the JSON of every `data:` line and whether `[DONE]` came.
pub fn read_sse(response: reqwest::blocking::Response) -> (Vec<serde_json::Value>, bool) {
    let mut events = Vec::new();
    let mut done = false;
    for line in BufReader::new(response).lines() {
        let Ok(line) = line else { break };
        if let Some(data) = line.strip_prefix("data: ") {
            if data == "[DONE]" {
                done = true;
            } else {
                events.push(serde_json::from_str(data).unwrap());
            }
        }
    }
    (events, done)
}

/// Reads an SSE stream of named events (Anthropic's, the Responses API's) to its end: each
/// event's `event:` name (empty if it has none) and the JSON of its data.
pub fn read_named_sse(response: reqwest::blocking::Response) -> Vec<(String, serde_json::Value)> {
    let mut events = Vec::new();
    let mut name = String::new();
    for line in BufReader::new(response).lines() {
        let Ok(line) = line else { break };
        if let Some(event) = line.strip_prefix("event: ") {
            name = event.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            events.push((
                std::mem::take(&mut name),
                serde_json::from_str(data).unwrap(),
            ));
        }
    }
    events
}

/// Concatenated text of a completion or chat stream's chunks, per choice 0.
pub fn stream_text(events: &[serde_json::Value]) -> String {
    events
        .iter()
        .filter_map(|e| e["choices"].get(0))
        .map(|c| {
            c["text"]
                .as_str()
                .or_else(|| c["delta"]["content"].as_str())
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// Runs the built `epas` binary to completion with `args` (2 threads, warnings only).
pub fn run_epas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_epas"))
        .args(args)
        .env("EPAS_THREADS", "2")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}
