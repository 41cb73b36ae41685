//! A tiny EPAS training run (4 layers, context 32, trained to share 2 of them by step 6) for tests
//! of commands that need a trained checkpoint.

use std::path::Path;

/// Writes a repetitive State-of-the-Union-like corpus to `dir`; its path.
pub fn write_corpus(dir: &Path) -> String {
    let text = "Mr. Speaker, the state of our union is strong. Our economy grew by 3 percent and \
                our schools taught 1200 more children to read. "
        .repeat(80);
    let path = dir.join("corpus.txt");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// `epas train` arguments of the tiny run over `data` into `out`, for `steps` steps.
pub fn train_args<'a>(data: &'a str, out: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--out",
        out,
        "--vocab-size",
        "320",
        "--layers",
        "4",
        "--hidden",
        "64",
        "--heads",
        "2",
        "--kv-heads",
        "1",
        "--ffn",
        "128",
        "--steps",
        steps,
        "--seq-len",
        "32",
        "--batch-size",
        "4",
        "--lr",
        "3e-3",
        "--sharing-ratio",
        "0.5",
        "--interval",
        "3",
        "--block",
        "1",
        "--log-every",
        "2",
    ]
}
