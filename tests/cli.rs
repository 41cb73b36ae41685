//! The built `epas` binary: exit codes, messages and output formats users and scripts rely on.

use std::path::PathBuf;
use std::process::Output;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model() -> PathBuf {
    let p = root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "run scripts/fetch-models.sh first");
    p
}

mod support;

/// `epas eval --json` of [`SOTU_OPENING`] on SmolLM2 with `args`; the parsed rows.
fn eval_sotu(args: &[&str]) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sotu.txt");
    std::fs::write(&path, SOTU_OPENING).unwrap();
    let m = model();
    let mut all = vec![
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--text",
        path.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    all.push("--json");
    let o = epas(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    rows.as_array().unwrap().clone()
}

/// The opening of the 2010 State of the Union address: real text for evaluation tests.
const SOTU_OPENING: &str = "Mr. Speaker, Mr. Vice President, Members of Congress, distinguished \
    guests, and fellow Americans: Our Constitution declares that from time to time, the President \
    shall give to the Congress information about the state of our Union. For 220 years, our \
    leaders have fulfilled this duty. They have done so during periods of prosperity and \
    tranquility, and they have done so in the midst of war and depression, at moments of great \
    strife and great struggle.";

use support::run_epas as epas;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn generate_streams_text_and_reports_speed() {
    let m = model();
    let o = epas(&[
        "generate",
        "--model",
        m.to_str().unwrap(),
        "--prompt",
        "Mr. Speaker, Mr. Vice President, Members of Congress",
        "--max-tokens",
        "12",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // llama.cpp's greedy continuation of this prompt starts this way.
    let out = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(out.starts_with(", and the President."), "{out:?}");
    let err = stderr(&o);
    assert!(
        err.contains("tok/s") && err.contains("generated: 12 tokens"),
        "{err}"
    );
}

#[test]
fn forced_sharing_needs_the_flag() {
    let m = model();
    let m = m.to_str().unwrap();
    let o = epas(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "Hello",
        "--sharing-ratio",
        "0.5",
        "--max-tokens",
        "4",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--allow-untrained-sharing"),
        "{}",
        stderr(&o)
    );
    let o = epas(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "Hello",
        "--sharing-ratio",
        "0.5",
        "--max-tokens",
        "4",
        "--allow-untrained-sharing",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("sharing 15 of 30 layers (source layer 14)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_inputs_exit_with_clear_errors() {
    let m = model();
    let m = m.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "generate".into(),
                "--model".into(),
                "/nonexistent/model.gguf".into(),
                "--prompt".into(),
                "x".into(),
            ],
            "cannot read",
        ),
        (
            vec![
                "generate".into(),
                "--model".into(),
                m.into(),
                "--prompt".into(),
                "".into(),
            ],
            "empty",
        ),
        (
            vec![
                "generate".into(),
                "--model".into(),
                m.into(),
                "--prompt".into(),
                "x".into(),
                "--sharing-ratio".into(),
                "NaN".into(),
                "--allow-untrained-sharing".into(),
            ],
            "not a finite",
        ),
        (
            vec![
                "generate".into(),
                "--model".into(),
                m.into(),
                "--prompt".into(),
                "x".into(),
                "--sharing-ratio".into(),
                "-1".into(),
            ],
            "negative",
        ),
        (
            vec![
                "generate".into(),
                "--model".into(),
                m.into(),
                "--prompt".into(),
                "x".into(),
                "--sharing-ratio".into(),
                "0.99".into(),
                "--allow-untrained-sharing".into(),
            ],
            "above the maximum",
        ),
        (
            vec![
                "generate".into(),
                "--model".into(),
                m.into(),
                "--prompt".into(),
                "x".into(),
                "--temperature".into(),
                "-1".into(),
            ],
            "temperature",
        ),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = epas(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}");
    }
    let binary = dir.path().join("latin1.txt");
    std::fs::write(&binary, b"caf\xe9 au lait").unwrap();
    let o = epas(&["eval", "--model", m, "--text", binary.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not UTF-8"), "{}", stderr(&o));
    let o = epas(&["eval", "--model", m, "--text", "/nonexistent.txt"]);
    assert_eq!(o.status.code(), Some(1));
    // Usage errors are clap's exit code 2.
    let o = epas(&["generate", "--model", m]);
    assert_eq!(o.status.code(), Some(2));
    let o = epas(&["eval", "--text", "x", "--ratios", "abc"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn eval_json_has_a_row_per_ratio_and_forced_sharing_hurts() {
    let rows = eval_sotu(&[
        "--ratios",
        "0,0.25,0.5",
        "--ctx",
        "64",
        "--allow-untrained-sharing",
    ]);
    assert_eq!(rows.len(), 3);
    let layers: Vec<u64> = rows
        .iter()
        .map(|r| r["sharing_layers"].as_u64().unwrap())
        .collect();
    assert_eq!(layers, vec![0, 7, 15]);
    let ppl: Vec<f64> = rows
        .iter()
        .map(|r| r["perplexity"].as_f64().unwrap())
        .collect();
    assert!(ppl.iter().all(|p| p.is_finite() && *p > 1.0));
    assert!(ppl[0] < ppl[1] && ppl[1] < ppl[2], "{ppl:?}");
    for r in rows {
        assert!(r["tokens_per_second"].as_f64().unwrap() > 0.0);
        assert!(r["sharing_ratio"].is_number());
    }
}

#[test]
fn kv_cache_dtype_halves_the_bytes_and_barely_moves_perplexity() {
    // Real text (on repeating text the model is so sure that tiny score changes show).
    let eval = |dtype: &str| {
        eval_sotu(&["--ctx", "96", "--ratios", "0", "--kv-cache-dtype", dtype])[0].clone()
    };
    let (f16, f32) = (eval("f16"), eval("f32"));
    let bytes = |r: &serde_json::Value| r["kv_cache_bytes_per_token"].as_u64().unwrap();
    assert_eq!(bytes(&f16) * 2, bytes(&f32));
    let ppl = |r: &serde_json::Value| r["perplexity"].as_f64().unwrap();
    // Real text: f16 K/V moves perplexity by well under 1% (SOTU 16k tokens: 0.04%).
    assert!((ppl(&f16) / ppl(&f32) - 1.0).abs() < 0.01, "{f16} vs {f32}");
    let o = epas(&["generate", "--kv-cache-dtype", "bf16", "--prompt", "Hi"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("f16 or f32"), "{}", stderr(&o));
}

#[test]
fn device_cuda_needs_the_feature_and_a_driver_and_bad_values_exit_2() {
    for args in [
        &["generate", "--device", "cuda", "--prompt", "Hi"][..],
        &["serve", "--device", "cuda:1", "--port", "0"][..],
        &["eval", "--device", "cuda", "--text", "README.md"][..],
        &["bench-train", "--device", "cuda", "--layers", "2"][..],
        &[
            "train",
            "--device",
            "cuda",
            "--data",
            "README.md",
            "--out",
            "target/never-written",
            "--steps",
            "1",
        ][..],
    ] {
        let o = epas(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        if cfg!(feature = "cuda") {
            // This machine has no GPU: the device does not open, and the error says which.
            assert!(err.contains("opening CUDA device"), "{err}");
        } else {
            assert!(err.contains("built without the cuda feature"), "{err}");
        }
    }
    assert!(!std::path::Path::new("target/never-written").exists());
    let o = epas(&["generate", "--device", "tpu", "--prompt", "Hi"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("expected cpu, cuda, cuda:N or cpu-tensor"));
    let o = epas(&["generate", "--device-dtype", "q4", "--prompt", "Hi"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("expected f16, bf16 or f32"));
    let o = epas(&["generate", "--device-weights", "q4", "--prompt", "Hi"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("expected dense or quantized"));
}

#[test]
fn check_device_passes_on_the_gpu_code_path_run_on_the_cpu() {
    let m = model();
    let o = epas(&[
        "check-device",
        "--model",
        m.to_str().unwrap(),
        "--device",
        "cpu-tensor",
        "--device-dtype",
        "f32",
        "--decode-steps",
        "4",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["passed"], true, "{r}");
    let ratios = r["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 3);
    assert_eq!(ratios[2]["sharing_layers"], 15);
    for row in ratios {
        assert!(row["max_abs_diff"].as_f64().unwrap() < 0.02, "{row}");
        assert_eq!(row["top1_agreement"], 1.0, "{row}");
    }
    assert_eq!(r["batch_sequences"], 9);
    assert_eq!(r["batch_greedy_identical"], 9, "{r}");
    // Generation on the same path reads like the host kernels' (greedy, same opening).
    let gen = |device: &str| {
        let o = epas(&[
            "generate",
            "--model",
            m.to_str().unwrap(),
            "--device",
            device,
            "--device-dtype",
            "f32",
            "--prompt",
            "The capital of France is",
            "--max-tokens",
            "6",
            "--temperature",
            "0",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    assert_eq!(gen("cpu-tensor"), gen("cpu"));
}
