//! `epas train`, `epas export`, and the trained model served by `generate` and `eval`, through
//! the built binary: the commands and flags users and the docs rely on.

use std::path::Path;
use std::process::Output;

mod support;

use support::run_epas as epas;
use support::tiny_run::{train_args, write_corpus};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn train_export_generate_and_eval_a_tiny_epas_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_corpus(dir.path());
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    let o = epas(&train_args(&data, out_s, "10"));
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("tok/s") && err.contains("sharing 2/2 layers"),
        "{err}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["steps"], 10);
    assert_eq!(summary["sharing_layers"], 2);

    // Continuing a finished run is refused; a second run into the same folder too.
    let again = epas(&train_args(&data, out_s, "10"));
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("--resume"), "{}", text(&again));

    let gguf = dir.path().join("run.q8_0.gguf");
    let o = epas(&[
        "export",
        "--model",
        out_s,
        "--gguf",
        "--quant",
        "q8_0",
        "--out",
        gguf.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));

    for model in [out_s, gguf.to_str().unwrap()] {
        let o = epas(&[
            "generate",
            "--model",
            model,
            "--prompt",
            "the state of",
            "--max-tokens",
            "8",
            "--sharing-ratio",
            "0.5",
        ]);
        assert!(o.status.success(), "{model}: {}", text(&o));
        let o = epas(&[
            "eval", "--model", model, "--text", &data, "--ratios", "0,0.5", "--ctx", "32", "--json",
        ]);
        assert!(o.status.success(), "{model}: {}", text(&o));
        let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 2);
        for r in rows {
            for key in [
                "sharing_ratio",
                "sharing_layers",
                "perplexity",
                "tokens_per_second",
            ] {
                assert!(r.get(key).is_some(), "{key} missing in {r}");
            }
        }
        // Ten steps already predict the corpus far better than chance (a vocabulary of 320).
        assert!(rows[1]["perplexity"].as_f64().unwrap() < 160.0, "{rows:?}");
    }

    // The f32 folder quantized at load scores like the dense folder; a quantized file, a dense
    // format and an unknown one are refused with the error's exit status.
    let perplexity = |extra: &[&str]| -> f64 {
        let mut args = vec![
            "eval", "--model", out_s, "--text", &data, "--ratios", "0.5", "--ctx", "32", "--json",
        ];
        args.extend_from_slice(extra);
        let o = epas(&args);
        assert!(o.status.success(), "{extra:?}: {}", text(&o));
        let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        rows[0]["perplexity"].as_f64().unwrap()
    };
    let dense = perplexity(&[]);
    let q8 = perplexity(&["--quantize", "q8_0"]);
    assert!(
        q8 != dense && (q8 / dense - 1.0).abs() < 0.01,
        "q8_0 {q8}, f32 {dense}"
    );
    let q4 = perplexity(&["--quantize", "q4_1"]);
    assert!(
        q4 != dense && (q4 / dense - 1.0).abs() < 0.1,
        "q4_1 {q4}, f32 {dense}"
    );
    let gguf_s = gguf.to_str().unwrap();
    for (model, flag, status, message) in [
        (gguf_s, "q4_1", 1, "already stored as q8_0"),
        (out_s, "f16", 1, "needs a block format"),
        (out_s, "q3", 2, "unknown quantization"),
    ] {
        let o = epas(&[
            "generate",
            "--model",
            model,
            "--prompt",
            "the",
            "--max-tokens",
            "1",
            "--quantize",
            flag,
        ]);
        assert_eq!(
            o.status.code(),
            Some(status),
            "{model} {flag}: {}",
            text(&o)
        );
        assert!(text(&o).contains(message), "{model} {flag}: {}", text(&o));
    }
}

#[test]
fn train_on_the_gpu_code_path_reaches_the_cpu_run_s_loss() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_corpus(dir.path());
    let final_loss = |device: &str| {
        let out = dir.path().join(device);
        let mut args = train_args(&data, out.to_str().unwrap(), "6");
        args.extend(["--device", device]);
        let o = epas(&args);
        assert!(o.status.success(), "{device}: {}", text(&o));
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        summary["final_loss"].as_f64().unwrap()
    };
    let (cpu, generic) = (final_loss("cpu"), final_loss("cpu-tensor"));
    assert!(
        (cpu - generic).abs() < 1e-3,
        "cpu {cpu}, cpu-tensor {generic}"
    );
}

#[test]
fn train_refuses_bad_flags_with_exit_status_2_or_1() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_corpus(dir.path());
    let out = dir.path().join("x");
    let out_s = out.to_str().unwrap();
    // Missing --data and --steps: a usage error.
    let o = epas(&["train", "--out", out_s]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // Growth block that does not divide the target set.
    let mut args = train_args(&data, out_s, "4");
    let i = args.iter().position(|a| *a == "--block").unwrap();
    args[i + 1] = "3";
    let o = epas(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("not a multiple of --block 3"),
        "{}",
        text(&o)
    );
    assert!(!out.exists(), "a failed run left {out_s} behind");
    // Unknown export quantization.
    let o = epas(&[
        "export", "--model", out_s, "--out", "x.gguf", "--quant", "q3",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn the_built_in_model_runs_with_no_model_flag_and_serves_its_trained_ratio() {
    let o = epas(&[
        "generate",
        "--prompt",
        "The State of the Union",
        "--max-tokens",
        "16",
        "--sharing-ratio",
        "0.5",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.split_whitespace().count() >= 3, "{out:?}");
    // Trained to 0.5 (4 of 8 layers): more needs the forced-sharing flag.
    let o = epas(&["generate", "--prompt", "The", "--sharing-ratio", "0.75"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("--allow-untrained-sharing"),
        "{}",
        text(&o)
    );
}

/// `epas export --model builtin` in each k-quant: the file loads with its format (the built-in
/// model's 256-wide rows hold whole super-blocks), keeps the trained sharing ratio, and scores
/// the text about as well as the built-in Q8_0 weights.
#[test]
fn the_built_in_model_exports_to_k_quants_that_keep_its_quality() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_corpus(dir.path());
    let perplexity = |model: &str| -> (f64, String) {
        // The load log (`RUST_LOG=info`, as JSON) names the weights' format.
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_epas"))
            .args([
                "eval",
                "--log-json",
                "--model",
                model,
                "--text",
                &data,
                "--ratios",
                "0.5",
                "--ctx",
                "64",
                "--json",
            ])
            .env("EPAS_THREADS", "2")
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        assert!(o.status.success(), "{model}: {}", text(&o));
        let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let ppl = rows[0]["perplexity"].as_f64().unwrap();
        (ppl, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (reference, _) = perplexity("builtin");
    for (quant, weights, tolerance) in [
        ("q6_k", "q6k", 0.01),
        ("q5_k", "q5k", 0.02),
        ("q4_k", "q4k", 0.05),
    ] {
        let path = dir.path().join(format!("builtin-{quant}.gguf"));
        let o = epas(&[
            "export",
            "--model",
            "builtin",
            "--quant",
            quant,
            "--out",
            path.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{quant}: {}", text(&o));
        let (ppl, log) = perplexity(path.to_str().unwrap());
        assert!(log.contains(&format!(r#""weights":"{weights}""#)), "{log}");
        assert!(
            (ppl - reference).abs() <= tolerance * reference,
            "{quant}: perplexity {ppl} against the built-in model's {reference}"
        );
        // Bound for a device, the file's blocks reach it as they are (no CPU rewrite) and the
        // GPU code path agrees with the host.
        let o = epas(&[
            "check-device",
            "--model",
            path.to_str().unwrap(),
            "--device",
            "cpu-tensor",
            "--device-weights",
            "quantized",
            "--decode-steps",
            "2",
        ]);
        assert!(o.status.success(), "{quant}: {}", text(&o));
        assert!(text(&o).contains("PASS"), "{}", text(&o));
    }
    // The tied table (the LM head) stays at q6_k under q4_k unless --pure: a smaller file.
    let pure = dir.path().join("builtin-q4_k-pure.gguf");
    let o = epas(&[
        "export",
        "--model",
        "builtin",
        "--quant",
        "q4_k",
        "--pure",
        "--out",
        pure.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let default = size(&dir.path().join("builtin-q4_k.gguf"));
    assert!(size(&pure) < default, "{} vs {default}", size(&pure));
}
