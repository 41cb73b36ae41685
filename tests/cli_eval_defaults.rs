//! `epas eval` with no `--ratios` or `--ctx` works on every checkpoint: the ratios the model can
//! serve, a window that fits its context, and a warning when too few tokens are scored.

use std::path::PathBuf;
use std::process::Output;

mod support;

use support::tiny_run::{train_args, write_corpus};
use support::{model_path, run_epas as epas};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The `sharing_ratio` of each JSON row of a successful `epas eval --json`.
fn evaluated_ratios(o: &Output) -> Vec<f64> {
    assert!(o.status.success(), "{}", stderr(o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["sharing_ratio"].as_f64().unwrap())
        .collect()
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_untrained_model_evaluates_ratio_0_alone_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let text = write(
        dir.path(),
        "short.txt",
        "Mr. Speaker, Mr. Vice President, Members of Congress, distinguished guests, and fellow \
         Americans: our Constitution declares that from time to time the President shall give \
         to the Congress information about the state of our Union.",
    );
    let m = model_path();
    let o = epas(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(evaluated_ratios(&o), vec![0.0]);
    let err = stderr(&o);
    assert!(
        err.contains("note:") && err.contains("--allow-untrained-sharing"),
        "{err}"
    );
    assert!(
        err.contains("warning:") && err.contains("tokens scored"),
        "a few dozen tokens are not a measurement: {err}"
    );
}

#[test]
fn a_checkpoint_with_a_short_context_is_evaluated_in_windows_that_fit_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_corpus(dir.path());
    let out = dir.path().join("run");
    let o = epas(&train_args(&data, out.to_str().unwrap(), "8"));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = epas(&[
        "eval",
        "--model",
        out.to_str().unwrap(),
        "--text",
        &data,
        "--json",
    ]);
    assert_eq!(evaluated_ratios(&o), vec![0.0, 0.25, 0.5]);
    let err = stderr(&o);
    assert!(!err.contains("warning:") && !err.contains("note:"), "{err}");
}
