//! The RoPE tables against tests/python/rope_reference.py, a float64 numpy rendering of
//! transformers' `default`, `linear` and `llama3` frequencies and of llama.cpp's Llama-3
//! `rope_freqs`: inverse frequencies agree to 1e-6 relative, cos/sin to 1e-6 of the angle.
//! Without python3 and numpy the test fails; it skips only with EPAS_TEST_ALLOW_SKIPS=1 and CI
//! unset (scripts/test-deps.sh installs numpy into .venv, first on PATH in scripts/test.sh).

use std::process::Command;

use super::{base_inverse_frequencies, inverse_frequencies, RopeTable};
use crate::config::LlamaConfig;
use crate::rope_scaling::{Llama3Scaling, RopeScaling};
use serde_json::{json, Value};

/// numpy's answer to `request`, or `None` (skipped, where skips are allowed) where python3 or
/// numpy is missing.
fn reference(request: &Value) -> Option<Value> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/python/rope_reference.py"
    );
    let missing = |why: String| -> Option<Value> {
        let message =
            format!("no numpy RoPE reference: {why} (scripts/test-deps.sh installs numpy)");
        let allowed = std::env::var_os("EPAS_TEST_ALLOW_SKIPS").is_some_and(|v| v == "1")
            && std::env::var_os("CI").is_none();
        assert!(allowed, "{message}");
        eprintln!("skipped: {message}");
        None
    };
    let out = match Command::new("python3")
        .arg(script)
        .arg(request.to_string())
        .output()
    {
        Ok(out) => out,
        Err(e) => return missing(format!("python3: {e}")),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(77) {
        return missing(stderr.trim().to_string());
    }
    assert!(out.status.success(), "rope_reference.py failed: {stderr}");
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn assert_relative(label: &str, ours: &[f32], theirs: &[f64]) {
    assert_eq!(ours.len(), theirs.len(), "{label}");
    for (i, (&a, &b)) in ours.iter().zip(theirs).enumerate() {
        let err = (a as f64 - b).abs() / b.abs();
        assert!(err < 1e-6, "{label}[{i}]: {a} vs {b} (relative {err:e})");
    }
}

fn config(head_dim: usize, theta: f32, rope_scaling: RopeScaling) -> LlamaConfig {
    LlamaConfig {
        vocab_size: 8,
        hidden_size: 2 * head_dim,
        intermediate_size: 8,
        num_layers: 1,
        num_heads: 2,
        num_kv_heads: 2,
        rope_theta: theta,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 131_072,
        tie_word_embeddings: true,
        rope_scaling,
    }
}

/// Compares the inverse frequencies and the cos/sin table of `c` with numpy's, for
/// `rope_scaling` as transformers' config.json would carry it. Returns numpy's answer.
fn check(label: &str, c: &LlamaConfig, rope_scaling: Value) -> Option<Value> {
    let positions = [0usize, 1, 2, 100, 2047, 8191, 8192, 30_000, 131_071];
    let theirs = reference(&json!({
        "head_dim": c.head_dim(),
        "theta": c.rope_theta,
        "rope_scaling": rope_scaling,
        "positions": positions,
    }))?;
    assert_relative(
        &format!("{label} inv_freq"),
        &inverse_frequencies(c),
        &floats(&theirs["inv_freq"]),
    );
    let table = RopeTable::for_config(c, positions[positions.len() - 1] + 1);
    let (cos, sin) = table.cos_sin(table.max_positions());
    let half = c.head_dim() / 2;
    for (row, &pos) in positions.iter().enumerate() {
        let angle = floats(&theirs["angle"][row]);
        for (name, ours, want) in [
            ("cos", cos, floats(&theirs["cos"][row])),
            ("sin", sin, floats(&theirs["sin"][row])),
        ] {
            for i in 0..half {
                let got = ours[pos * half + i] as f64;
                let tolerance = 1e-6 * (1.0 + angle[i].abs());
                assert!(
                    (got - want[i]).abs() <= tolerance,
                    "{label} {name} at position {pos}, frequency {i}: {got} vs {}",
                    want[i]
                );
            }
        }
    }
    Some(theirs)
}

fn llama3(factor: f64) -> Llama3Scaling {
    Llama3Scaling {
        factor,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    }
}

fn hf_llama3(p: &Llama3Scaling) -> Value {
    json!({
        "rope_type": "llama3",
        "factor": p.factor,
        "low_freq_factor": p.low_freq_factor,
        "high_freq_factor": p.high_freq_factor,
        "original_max_position_embeddings": p.original_max_position_embeddings,
    })
}

/// Llama 3.2 1B/3B (head_dim 64, factor 32) and Llama 3.1 8B (head_dim 128, factor 8): the
/// scaled frequencies and table, llama.cpp's divisors, and the same frequencies reached through
/// those divisors (how a GGUF file carries the scaling).
#[test]
fn llama3_scaling_equals_transformers_and_llama_cpp() {
    for (head_dim, factor) in [(64, 32.0), (128, 8.0)] {
        let p = llama3(factor);
        let label = format!("llama3 head_dim {head_dim}");
        let c = config(head_dim, 500_000.0, RopeScaling::Llama3(p));
        let Some(theirs) = check(&label, &c, hf_llama3(&p)) else {
            return;
        };
        let base = base_inverse_frequencies(head_dim, 500_000.0);
        let divisors = p.frequency_factors(&base);
        assert_relative(
            &format!("{label} rope_freqs"),
            &divisors,
            &floats(&theirs["rope_freqs"]),
        );
        // Some frequencies are kept, some divided by the factor and some smoothed.
        assert!(divisors.contains(&1.0) && divisors.contains(&(factor as f32)));
        assert!(divisors.iter().any(|&d| d > 1.0 && d < factor as f32));
        let by_table = RopeScaling::Frequencies { factors: divisors };
        let c = config(head_dim, 500_000.0, by_table);
        check(&format!("{label} via rope_freqs"), &c, hf_llama3(&p));
    }
}

#[test]
fn linear_and_unscaled_tables_equal_transformers() {
    let c = config(64, 10_000.0, RopeScaling::Linear { factor: 4.0 });
    check("linear", &c, json!({"rope_type": "linear", "factor": 4.0}));
    let c = config(64, 100_000.0, RopeScaling::None);
    check("default", &c, Value::Null);
}
