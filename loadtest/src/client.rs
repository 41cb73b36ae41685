//! One streamed request: the body, the SSE read with timestamps, the failure kinds.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::args::{Config, Endpoint};
use crate::error::{LoadtestError, Result};
use crate::outcome::{ErrorKind, Failure, Success};
use crate::sse::SseParser;
use crate::workload::RequestPlan;

/// What every request body shares.
#[derive(Clone, Debug)]
pub struct BodyTemplate {
    pub model: String,
    pub endpoint: Endpoint,
    pub ignore_eos: bool,
    pub min_tokens: Option<u32>,
    pub temperature: f64,
    pub ratio_in_model: bool,
    pub stream_usage: bool,
    pub extra: Map<String, Value>,
}

impl BodyTemplate {
    pub fn new(config: &Config, model: String) -> Self {
        BodyTemplate {
            model,
            endpoint: config.endpoint,
            ignore_eos: config.ignore_eos,
            min_tokens: config.min_tokens,
            temperature: config.temperature,
            ratio_in_model: config.ratio_in_model,
            stream_usage: config.stream_usage,
            extra: config.extra_body.clone(),
        }
    }

    /// The JSON body: `sharing_ratio` (or the `MODEL@R` alias) only when the plan has a ratio,
    /// `ignore_eos`/`min_tokens`/`stream_options` only when asked.
    pub fn body(&self, plan: &RequestPlan) -> Value {
        let mut body = Map::new();
        let model = match plan.ratio {
            Some(r) if self.ratio_in_model => format!("{}@{r}", self.model),
            _ => self.model.clone(),
        };
        body.insert("model".into(), model.into());
        match self.endpoint {
            Endpoint::Completions => {
                body.insert("prompt".into(), plan.prompt.text.clone().into());
            }
            Endpoint::Chat => {
                body.insert(
                    "messages".into(),
                    json!([{"role": "user", "content": plan.prompt.text}]),
                );
            }
        }
        body.insert("max_tokens".into(), plan.max_tokens.into());
        body.insert("temperature".into(), self.temperature.into());
        body.insert("stream".into(), true.into());
        if self.stream_usage {
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        if self.ignore_eos {
            body.insert("ignore_eos".into(), true.into());
        }
        if let Some(n) = self.min_tokens {
            body.insert("min_tokens".into(), n.into());
        }
        if let (Some(r), false) = (plan.ratio, self.ratio_in_model) {
            body.insert("sharing_ratio".into(), r.into());
        }
        for (k, v) in &self.extra {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

pub struct Client {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
    timeout: Duration,
    pub template: BodyTemplate,
}

impl Client {
    pub fn http(config: &Config) -> Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(1024)
            .build()?)
    }

    pub fn new(http: reqwest::Client, config: &Config, template: BodyTemplate) -> Self {
        Client {
            http,
            base_url: config.base_url.clone(),
            api_key: config.api_key.clone(),
            timeout: config.timeout,
            template,
        }
    }

    /// Sends one request and reads its stream to the end. Never panics on what the server
    /// sends: every problem is a `Failure`.
    pub async fn send(&self, plan: &RequestPlan) -> std::result::Result<Success, Failure> {
        let body = self.template.body(plan);
        let start = Instant::now();
        // reqwest's own timeout covers connect, headers and body; this is the backstop.
        let limit = self.timeout + Duration::from_secs(1);
        match tokio::time::timeout(limit, self.exchange(&body, plan, start)).await {
            Ok(result) => result,
            Err(_) => Err(fail(ErrorKind::Timeout, "no end within --timeout")),
        }
    }

    async fn exchange(
        &self,
        body: &Value,
        plan: &RequestPlan,
        start: Instant,
    ) -> std::result::Result<Success, Failure> {
        let url = format!("{}{}", self.base_url, self.template.endpoint.path());
        let request = || {
            let r = self.http.post(&url).json(body);
            match &self.api_key {
                Some(key) => r.bearer_auth(key),
                None => r,
            }
        };
        let mut response = match request().send().await {
            Ok(r) => r,
            // A kept-alive connection that the server closed just as it was reused: the
            // request never reached it, so it goes once more on a fresh connection (as HTTP
            // clients do), its clock still running from the first try.
            Err(e) if is_unanswered(&e) => request().send().await.map_err(request_failure)?,
            Err(e) => return Err(request_failure(e)),
        };
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(fail(
                ErrorKind::Http(status.as_u16()),
                &error_message(&text),
            ));
        }
        let is_sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            return Err(fail(
                ErrorKind::BadResponse,
                "a 2xx answer that is not text/event-stream",
            ));
        }
        let mut stream = StreamState::new(start);
        let mut parser = SseParser::default();
        loop {
            match response.chunk().await {
                Ok(Some(bytes)) => {
                    let now = Instant::now();
                    for event in parser.push(&bytes) {
                        stream.event(&event, now)?;
                    }
                }
                Ok(None) => {
                    let now = Instant::now();
                    for event in parser.finish() {
                        stream.event(&event, now)?;
                    }
                    break;
                }
                Err(e) if e.is_timeout() => {
                    return Err(fail(ErrorKind::Timeout, "the stream ran past --timeout"))
                }
                Err(e) => return Err(fail(ErrorKind::BrokenStream, &error_chain(&e))),
            }
            if stream.done {
                break;
            }
        }
        stream.finish(Instant::now(), plan.prompt.approx_tokens as u64)
    }
}

/// The first model id of GET /v1/models.
pub async fn first_model(http: &reqwest::Client, config: &Config) -> Result<String> {
    let url = format!("{}/v1/models", config.base_url);
    let mut request = http.get(&url);
    if let Some(key) = &config.api_key {
        request = request.bearer_auth(key);
    }
    let failed = |why: String| {
        LoadtestError::Server(format!("GET {url}: {why}; name the model with --model"))
    };
    let response = request.send().await.map_err(|e| failed(error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(failed(format!("HTTP {status}")));
    }
    let models: Value = response.json().await.map_err(|e| failed(error_chain(&e)))?;
    models["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| failed("no model listed".into()))
}

/// Timestamps and counts gathered while a stream is read.
struct StreamState {
    start: Instant,
    ttft: Option<f64>,
    last_text: Option<Instant>,
    itls: Vec<f64>,
    text_chunks: u64,
    usage: Option<(u64, u64)>,
    finish_reason: bool,
    done: bool,
}

impl StreamState {
    fn new(start: Instant) -> Self {
        StreamState {
            start,
            ttft: None,
            last_text: None,
            itls: Vec::new(),
            text_chunks: 0,
            usage: None,
            finish_reason: false,
            done: false,
        }
    }

    fn event(&mut self, data: &str, now: Instant) -> std::result::Result<(), Failure> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let chunk: Value = serde_json::from_str(data).map_err(|_| {
            fail(
                ErrorKind::BadResponse,
                &format!("a stream event that is not JSON: {}", clip(data)),
            )
        })?;
        if let Some(error) = chunk.get("error") {
            let message = error["message"].as_str().unwrap_or("").to_string();
            return Err(fail(ErrorKind::StreamError, &message));
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            if let Some(out) = usage["completion_tokens"].as_u64() {
                self.usage = Some((usage["prompt_tokens"].as_u64().unwrap_or(0), out));
            }
        }
        let Some(choice) = chunk["choices"].get(0) else {
            return Ok(());
        };
        let text_len = [
            &choice["text"],
            &choice["delta"]["content"],
            &choice["delta"]["reasoning_content"],
        ]
        .into_iter()
        .filter_map(Value::as_str)
        .map(str::len)
        .sum::<usize>();
        if text_len > 0 {
            let since_start = now.duration_since(self.start).as_secs_f64();
            match self.last_text {
                None => self.ttft = Some(since_start),
                Some(last) => self.itls.push(now.duration_since(last).as_secs_f64()),
            }
            self.last_text = Some(now);
            self.text_chunks += 1;
        }
        if !choice["finish_reason"].is_null() {
            self.finish_reason = true;
        }
        Ok(())
    }

    fn finish(self, now: Instant, approx_prompt: u64) -> std::result::Result<Success, Failure> {
        if !self.done && !self.finish_reason {
            return Err(fail(
                ErrorKind::BrokenStream,
                "the stream ended without a finish reason or [DONE]",
            ));
        }
        let (prompt_tokens, output_tokens) = match self.usage {
            Some(u) => u,
            None => (approx_prompt, self.text_chunks),
        };
        Ok(Success {
            ttft: self.ttft,
            itls: self.itls,
            e2e: now.duration_since(self.start).as_secs_f64(),
            output_tokens,
            prompt_tokens,
            usage_reported: self.usage.is_some(),
        })
    }
}

fn fail(kind: ErrorKind, message: &str) -> Failure {
    Failure {
        kind,
        message: clip(message),
    }
}

/// The connection closed before any response byte, without a timeout or a connect error.
fn is_unanswered(e: &reqwest::Error) -> bool {
    e.is_request() && !e.is_timeout() && !e.is_connect()
}

fn request_failure(e: reqwest::Error) -> Failure {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_connect() {
        ErrorKind::Connect
    } else {
        // The connection closed or reset before a response head.
        ErrorKind::BrokenStream
    };
    fail(kind, &error_chain(&e))
}

/// The OpenAI error message of a body, or the start of the body.
fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| clip(body))
}

/// An error and its causes, which hold the useful part of reqwest's errors.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn clip(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompts::Prompt;

    fn plan(ratio: Option<f64>) -> RequestPlan {
        RequestPlan {
            index: 0,
            prompt: Prompt {
                text: "hello there".into(),
                approx_tokens: 2,
            },
            max_tokens: 8,
            ratio,
        }
    }

    fn template(endpoint: Endpoint) -> BodyTemplate {
        BodyTemplate {
            model: "m".into(),
            endpoint,
            ignore_eos: false,
            min_tokens: None,
            temperature: 0.0,
            ratio_in_model: false,
            stream_usage: true,
            extra: Map::new(),
        }
    }

    #[test]
    fn ratio_is_sent_only_when_asked() {
        let t = template(Endpoint::Completions);
        let plain = t.body(&plan(None));
        assert!(plain.get("sharing_ratio").is_none());
        assert!(plain.get("ignore_eos").is_none());
        assert_eq!(plain["stream_options"]["include_usage"], true);
        assert_eq!(t.body(&plan(Some(0.5)))["sharing_ratio"], 0.5);
        let alias = BodyTemplate {
            ratio_in_model: true,
            ignore_eos: true,
            min_tokens: Some(8),
            ..template(Endpoint::Chat)
        };
        let b = alias.body(&plan(Some(0.25)));
        assert_eq!(b["model"], "m@0.25");
        assert!(b.get("sharing_ratio").is_none());
        assert_eq!(b["messages"][0]["content"], "hello there");
        assert_eq!(
            (b["ignore_eos"].clone(), b["min_tokens"].clone()),
            (json!(true), json!(8))
        );
    }

    #[test]
    fn stream_state_times_text_chunks_and_prefers_usage() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut s = StreamState::new(t0);
        s.event(
            r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            at(5),
        )
        .unwrap();
        s.event(r#"{"choices":[{"text":"a"}]}"#, at(100)).unwrap();
        s.event(
            r#"{"choices":[{"text":"b","finish_reason":null}]}"#,
            at(130),
        )
        .unwrap();
        s.event(
            r#"{"choices":[{"text":"c","finish_reason":"length"}]}"#,
            at(170),
        )
        .unwrap();
        s.event(
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}"#,
            at(171),
        )
        .unwrap();
        s.event("[DONE]", at(172)).unwrap();
        assert!(s.done);
        let ok = s.finish(at(172), 2).unwrap();
        assert!((ok.ttft.unwrap() - 0.1).abs() < 1e-9);
        assert_eq!(ok.itls.len(), 2);
        assert!((ok.itls[1] - 0.04).abs() < 1e-9);
        assert_eq!(
            (ok.prompt_tokens, ok.output_tokens, ok.usage_reported),
            (7, 3, true)
        );
    }

    #[test]
    fn broken_and_bad_streams_are_failures() {
        let t0 = Instant::now();
        let mut s = StreamState::new(t0);
        s.event(r#"{"choices":[{"text":"a"}]}"#, t0).unwrap();
        let e = s.finish(t0, 1).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BrokenStream);
        let mut s = StreamState::new(t0);
        assert_eq!(
            s.event("{not json", t0).unwrap_err().kind,
            ErrorKind::BadResponse
        );
        let e = s.event(r#"{"error":{"message":"boom"}}"#, t0).unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::StreamError, "boom")
        );
        // Without usage the tokens are the text chunks, the prompt the estimate.
        let mut s = StreamState::new(t0);
        s.event(r#"{"choices":[{"text":"a","finish_reason":"stop"}]}"#, t0)
            .unwrap();
        let ok = s.finish(t0, 9).unwrap();
        assert_eq!(
            (ok.prompt_tokens, ok.output_tokens, ok.usage_reported),
            (9, 1, false)
        );
        assert_eq!(
            error_message(r#"{"error":{"message":"queue full"}}"#),
            "queue full"
        );
        assert_eq!(clip(&"x".repeat(300)).len(), 203);
    }
}
