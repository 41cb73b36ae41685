//! Engine test helpers: models, and collecting a request's events.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use candle_core::Device;
use epas_model::random_model;
use epas_model::{EpasLlama, LlamaConfig, SharingPlan, TextTokenizer};
use epas_server::engine::{
    EngineConfig, EngineEvent, EngineHandle, Failure, FinishReason, GenerationParams,
    GenerationRequest, InvalidRequest, NoObserver, Refusal, Usage, ValidRequest,
};

pub fn smollm2() -> &'static (Arc<EpasLlama>, Arc<TextTokenizer>) {
    static M: OnceLock<(Arc<EpasLlama>, Arc<TextTokenizer>)> = OnceLock::new();
    M.get_or_init(|| {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(p.exists(), "run scripts/fetch-models.sh");
        let (m, t) = epas_model::load_model(&p, &Device::Cpu).unwrap();
        (Arc::new(m), Arc::new(t))
    })
}

/// A small random model (8 layers) that uses SmolLM2's tokenizer; f32 weights.
pub fn tiny() -> (Arc<EpasLlama>, Arc<TextTokenizer>) {
    let config = LlamaConfig {
        vocab_size: 49152,
        hidden_size: 64,
        intermediate_size: 96,
        num_layers: 8,
        num_heads: 4,
        num_kv_heads: 2,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 512,
        tie_word_embeddings: true,
        rope_scaling: Default::default(),
    };
    let mut m = random_model(config, None, 99).unwrap();
    for l in &mut m.host_weights_mut().unwrap().layers {
        l.wq = epas_model::Linear::dense((l.wq.dequantized().unwrap() * 20.0).unwrap()).unwrap();
    }
    (Arc::new(m), smollm2().1.clone())
}

pub fn engine(model: &(Arc<EpasLlama>, Arc<TextTokenizer>), config: EngineConfig) -> EngineHandle {
    EngineHandle::start(
        model.0.clone() as Arc<dyn epas_server::engine::StepModel>,
        model.1.clone(),
        config,
        Arc::new(NoObserver),
    )
    .unwrap()
}

/// The request's fault that the validation step found (panics on anything else).
pub fn invalid(result: Result<ValidRequest, Refusal>) -> InvalidRequest {
    match result {
        Err(Refusal::Invalid(e)) => e,
        Err(other) => panic!("refused, but not as an invalid request: {other:?}"),
        Ok(_) => panic!("accepted"),
    }
}

pub fn prompt(len: usize, salt: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|i| (i * 7919 + salt * 104729 + 11) % 49000 + 100)
        .collect()
}

pub fn request(
    prompt: Vec<u32>,
    layers: usize,
    ratio: f64,
    max_tokens: usize,
) -> GenerationRequest {
    GenerationRequest {
        prompt,
        plan: SharingPlan::new(layers, ratio).unwrap(),
        params: GenerationParams {
            max_tokens,
            ignore_eos: true,
            ..Default::default()
        },
        constraint: None,
    }
}

/// Validates and submits `req`; both must succeed.
pub fn submit(
    e: &EngineHandle,
    req: GenerationRequest,
) -> tokio::sync::mpsc::UnboundedReceiver<EngineEvent> {
    e.submit(e.validate(req).unwrap()).unwrap()
}

/// Everything one request produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub tokens: Vec<Vec<u32>>,
    pub text: Vec<String>,
    pub finish: Vec<Option<FinishReason>>,
    /// The stop string that ended each choice, if one did.
    pub stop_sequence: Vec<Option<String>>,
    pub usage: Option<Usage>,
    pub error: Option<String>,
}

pub fn collect(mut rx: tokio::sync::mpsc::UnboundedReceiver<EngineEvent>, n: usize) -> Outcome {
    let mut o = Outcome {
        tokens: vec![Vec::new(); n],
        text: vec![String::new(); n],
        finish: vec![None; n],
        stop_sequence: vec![None; n],
        ..Default::default()
    };
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            EngineEvent::Token {
                index, token, text, ..
            } => {
                o.tokens[index].push(token);
                o.text[index].push_str(&text);
            }
            EngineEvent::Finished {
                index,
                reason,
                text,
                stop_sequence,
            } => {
                o.text[index].push_str(&text);
                o.finish[index] = Some(reason);
                o.stop_sequence[index] = stop_sequence;
            }
            EngineEvent::Done { usage } => {
                o.usage = Some(usage);
                break;
            }
            EngineEvent::Error(Failure { message, .. }) => {
                o.error = Some(message);
                break;
            }
        }
    }
    o
}

/// Runs `req` on a fresh engine with nothing else in it.
pub fn alone(model: &(Arc<EpasLlama>, Arc<TextTokenizer>), req: GenerationRequest) -> Outcome {
    let n = req.params.n;
    let e = engine(
        model,
        EngineConfig {
            prefix_cache: false,
            ..Default::default()
        },
    );
    collect(submit(&e, req), n)
}

/// Waits until the engine has no running or waiting work.
pub fn wait_idle(e: &EngineHandle) {
    for _ in 0..2000 {
        if e.state().idle() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("engine did not become idle: {:?}", e.snapshot());
}
