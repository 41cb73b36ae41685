//! Liveness when requests cannot run: while the model loads, and after a panic on the engine
//! thread (liveness fails with the panic's message, the panic is logged, generations get a
//! prompt 503 instead of hanging). The real router, served in-process on a loopback port.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::smollm2;
use epas_server::engine::{EngineConfig, EngineHandle, EngineObserver};
use epas_server::http::{router, AppState, HttpConfig, Ready, ServerConfig};
use epas_server::metrics::Metrics;

const PANIC_MESSAGE: &str = "observer exploded on admission";

/// Panics on the engine thread the first time a request is admitted.
struct PanicsOnAdmission;

impl EngineObserver for PanicsOnAdmission {
    fn admitted(&self, _ratio: f64, _queue_time: Duration) {
        panic!("{PANIC_MESSAGE}");
    }
}

/// Everything the process logs through `tracing`, as text.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Installs a global subscriber (the engine logs from its own thread) writing into a buffer.
fn captured_logs() -> LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = LogBuffer::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
    .clone()
}

fn server_config() -> ServerConfig {
    ServerConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        http: HttpConfig {
            served_model_name: "smollm2".into(),
            allow_untrained_sharing: false,
            default_sharing_ratio: 0.0,
            api_keys: Vec::new(),
            max_n: 8,
            max_stop_sequences: 16,
            max_logprobs: 20,
        },
        engine: EngineConfig::default(),
        max_body_bytes: 1 << 20,
        request_timeout: Duration::from_secs(60),
        shutdown_timeout: Duration::from_secs(5),
        drain_grace: Duration::ZERO,
        cors_origins: vec!["*".into()],
    }
}

fn new_state(config: &ServerConfig) -> Arc<AppState> {
    Arc::new(AppState {
        config: config.http.clone(),
        metrics: Arc::new(Metrics::new().unwrap()),
        ready: OnceLock::new(),
    })
}

/// Serves the real router over `state`; returns the runtime (it must outlive the requests)
/// and the bound address.
fn serve(state: Arc<AppState>, config: &ServerConfig) -> (tokio::runtime::Runtime, SocketAddr) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(config.addr))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state, config);
    runtime.spawn(async move { axum::serve(listener, app.into_make_service()).await });
    (runtime, addr)
}

/// Serves SmolLM2 with an engine that panics on admission.
fn serve_with_doomed_engine() -> (tokio::runtime::Runtime, SocketAddr) {
    let (model, tokenizer) = smollm2().clone();
    let config = server_config();
    let engine = EngineHandle::start(
        model.clone(),
        tokenizer.clone(),
        config.engine.clone(),
        Arc::new(PanicsOnAdmission),
    )
    .unwrap();
    let state = new_state(&config);
    assert!(state
        .ready
        .set(Ready {
            engine,
            tokenizer,
            info: model.info.clone(),
            created: 0,
        })
        .is_ok());
    serve(state, &config)
}

/// The value of one series in `/metrics`, e.g. `epas_requests_total{status="503"}`.
fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let (_, text) = exchange(addr, "GET", "/metrics", "");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A response read whole from a `Connection: close` exchange.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (key, value) = l.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// One HTTP/1.1 exchange on its own connection.
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("the server answered within 30 s");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Reply {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// The status and body of one exchange.
fn exchange(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let reply = request(addr, method, path, body);
    (reply.status, reply.body)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn an_engine_panic_fails_liveness_is_logged_and_generations_get_503() {
    let logs = captured_logs();
    let (_runtime, addr) = serve_with_doomed_engine();
    assert_eq!(exchange(addr, "GET", "/health", "").0, 200);

    let completion = r#"{"prompt": "Hello", "max_tokens": 4}"#;
    let (status, body) = exchange(addr, "POST", "/v1/completions", completion);
    assert_eq!(status, 500, "the request the engine died on: {body}");

    // The engine thread records its failure once it has unwound, just after the request above
    // lost its events; wait for that (bounded) before asking for liveness.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        let (status, body) = exchange(addr, "GET", "/health", "");
        if status != 200 || Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status, 503, "liveness after the engine died: {body}");
    let health = json(&body);
    assert_eq!(health["status"], "failed", "{health}");
    assert!(
        health["error"].as_str().unwrap().contains(PANIC_MESSAGE),
        "{health}"
    );

    let started = Instant::now();
    let reply = request(addr, "POST", "/v1/completions", completion);
    let (status, body) = (reply.status, reply.body.clone());
    assert_eq!(status, 503, "a generation after the engine died: {body}");
    assert!(
        reply.header("retry-after").is_none(),
        "retrying this replica cannot help: {}",
        reply.head
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it did not hang"
    );
    let error = json(&body);
    assert_eq!(error["error"]["code"], "engine_failed", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains(PANIC_MESSAGE),
        "{error}"
    );

    assert_eq!(
        metric(
            addr,
            "epas_requests_rejected_total{reason=\"engine_failed\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(addr, "epas_requests_total{status=\"500\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(addr, "epas_requests_total{status=\"503\"}"),
        Some(1.0)
    );

    let logged = logs.text();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("ERROR") && l.contains(PANIC_MESSAGE)),
        "the panic is logged as an error with its message:\n{logged}"
    );
}

#[test]
fn while_the_model_loads_generations_get_503_to_retry_and_count_as_loading() {
    let config = server_config();
    let (_runtime, addr) = serve(new_state(&config), &config);
    let (status, body) = exchange(addr, "GET", "/health", "");
    assert_eq!(
        (status, json(&body)),
        (503, serde_json::json!({"status": "loading"}))
    );

    let chat = r#"{"messages": [{"role": "user", "content": "Hi"}]}"#;
    let reply = request(addr, "POST", "/v1/chat/completions", chat);
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.header("retry-after").is_some(), "{}", reply.head);
    assert_eq!(json(&reply.body)["error"]["code"], "model_loading");
    assert_eq!(
        metric(addr, "epas_requests_rejected_total{reason=\"loading\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(addr, "epas_requests_total{status=\"503\"}"),
        Some(1.0)
    );
}
