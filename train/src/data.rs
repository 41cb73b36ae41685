//! Training data: text files -> token stream -> fixed-length windows, split into training and
//! validation, served in a seeded order that depends only on the step (so a resumed run sees
//! exactly the batches an uninterrupted run would).

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::error::{TrainError, TrainResult};
use epas_model::TextTokenizer;

/// One input file.
#[derive(Debug, Clone)]
pub struct Document {
    pub path: PathBuf,
    pub text: String,
}

/// Reads every file named (folders recursively, in name order, hidden files skipped). Each file
/// must be UTF-8; the corpus as a whole must contain some text.
pub fn read_corpus(paths: &[PathBuf]) -> TrainResult<Vec<Document>> {
    if paths.is_empty() {
        return Err(TrainError::Corpus("no --data path given".into()));
    }
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files)?;
    }
    let mut docs = Vec::with_capacity(files.len());
    for path in files {
        let bytes = std::fs::read(&path).map_err(TrainError::io(&path))?;
        let text = String::from_utf8(bytes).map_err(|e| TrainError::NotUtf8 {
            path: path.clone(),
            message: format!("invalid byte at offset {}", e.utf8_error().valid_up_to()),
        })?;
        if !text.trim().is_empty() {
            docs.push(Document { path, text });
        }
    }
    if docs.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(TrainError::Corpus(format!(
            "no text in {} (empty files or folders)",
            names.join(", ")
        )));
    }
    Ok(docs)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> TrainResult<()> {
    let meta = std::fs::metadata(path).map_err(TrainError::io(path))?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(TrainError::io(path))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    entries.sort();
    for e in entries {
        collect_files(&e, out)?;
    }
    Ok(())
}

/// Tokenizes every document and joins them with `separator` (end of text) between documents.
pub fn token_stream(
    docs: &[Document],
    tokenizer: &TextTokenizer,
    separator: u32,
) -> TrainResult<Vec<u32>> {
    let mut stream = Vec::new();
    for doc in docs {
        let ids = tokenizer
            .inner()
            .encode_fast(doc.text.as_str(), false)
            .map_err(|e| TrainError::Tokenizer(format!("{}: {e}", doc.path.display())))?;
        stream.extend_from_slice(ids.get_ids());
        stream.push(separator);
    }
    Ok(stream)
}

/// Fixed-length windows of `seq_len + 1` tokens (inputs and shifted targets).
#[derive(Debug, Clone)]
pub struct Windows {
    pub seq_len: usize,
    tokens: Vec<u32>,
    starts: Vec<usize>,
}

impl Windows {
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Window `i`: `seq_len + 1` tokens.
    pub fn get(&self, i: usize) -> &[u32] {
        let s = self.starts[i];
        &self.tokens[s..s + self.seq_len + 1]
    }

    pub fn token_count(&self) -> usize {
        self.len() * self.seq_len
    }
}

/// Training and validation windows.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub train: Windows,
    pub validation: Windows,
}

impl Dataset {
    /// Cuts `stream` into non-overlapping windows; every `1 / val_fraction`-th window goes to
    /// validation (spread over the corpus rather than its tail), unless `validation` is given.
    pub fn split(
        stream: Vec<u32>,
        seq_len: usize,
        val_fraction: f64,
        validation: Option<Vec<u32>>,
    ) -> TrainResult<Self> {
        if seq_len < 2 {
            return Err(TrainError::Options(format!(
                "--seq-len must be at least 2 (got {seq_len})"
            )));
        }
        let span = seq_len + 1;
        let count = stream.len() / span;
        if count == 0 {
            return Err(TrainError::Corpus(format!(
                "the corpus has {} tokens, fewer than one sequence of --seq-len {seq_len} + 1",
                stream.len()
            )));
        }
        let all: Vec<usize> = (0..count).map(|i| i * span).collect();
        let (train_starts, val) = match validation {
            Some(val_stream) => {
                let n = val_stream.len() / span;
                if n == 0 {
                    return Err(TrainError::Corpus(format!(
                        "the validation text has {} tokens, fewer than one sequence",
                        val_stream.len()
                    )));
                }
                let val = Windows {
                    seq_len,
                    starts: (0..n).map(|i| i * span).collect(),
                    tokens: val_stream,
                };
                (all, val)
            }
            None => {
                if !(val_fraction > 0.0 && val_fraction < 1.0) {
                    return Err(TrainError::Options(format!(
                        "--val-fraction must be in (0, 1) (got {val_fraction})"
                    )));
                }
                if count < 2 {
                    return Err(TrainError::Corpus(format!(
                        "the corpus gives only {count} sequence of {span} tokens: at least two \
                         are needed (one for training, one for validation)"
                    )));
                }
                let every = ((1.0 / val_fraction).round() as usize).clamp(2, count);
                let (mut train, mut val) = (Vec::new(), Vec::new());
                for (i, s) in all.into_iter().enumerate() {
                    if i % every == every - 1 {
                        val.push(s);
                    } else {
                        train.push(s);
                    }
                }
                let val = Windows {
                    seq_len,
                    starts: val,
                    tokens: stream.clone(),
                };
                (train, val)
            }
        };
        Ok(Self {
            train: Windows {
                seq_len,
                starts: train_starts,
                tokens: stream,
            },
            validation: val,
        })
    }
}

/// The order in which training windows are visited: a fresh seeded permutation per epoch, so
/// the window of any (step, micro-batch, row) is known without replaying earlier steps.
#[derive(Debug, Clone)]
pub struct BatchOrder {
    seed: u64,
    windows: usize,
    epoch: usize,
    permutation: Vec<usize>,
}

impl BatchOrder {
    pub fn new(seed: u64, windows: usize) -> Self {
        let mut order = Self {
            seed,
            windows,
            epoch: usize::MAX,
            permutation: Vec::new(),
        };
        order.set_epoch(0);
        order
    }

    fn set_epoch(&mut self, epoch: usize) {
        if self.epoch == epoch {
            return;
        }
        let mut p: Vec<usize> = (0..self.windows).collect();
        let mut rng = StdRng::seed_from_u64(self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9));
        p.shuffle(&mut rng);
        self.permutation = p;
        self.epoch = epoch;
    }

    /// Window index of the `n`-th sample drawn since the start of training.
    pub fn window(&mut self, n: usize) -> usize {
        self.set_epoch(n / self.windows);
        self.permutation[n % self.windows]
    }

    /// Epochs covered after `samples` samples.
    pub fn epochs(&self, samples: usize) -> f64 {
        samples as f64 / self.windows as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_stream_and_validation_is_spread() {
        let stream: Vec<u32> = (0..1000).collect();
        let d = Dataset::split(stream, 9, 0.25, None).unwrap();
        assert_eq!(d.train.len() + d.validation.len(), 100);
        assert_eq!(d.validation.len(), 25);
        assert_eq!(d.validation.get(0), &(30..40).collect::<Vec<u32>>()[..]);
        assert_eq!(d.train.get(0).len(), 10);
    }

    #[test]
    fn too_short_corpora_are_refused() {
        let e = Dataset::split((0..5).collect(), 8, 0.1, None).unwrap_err();
        assert!(e.to_string().contains("fewer than one sequence"), "{e}");
        let e = Dataset::split((0..12).collect(), 8, 0.1, None).unwrap_err();
        assert!(e.to_string().contains("at least two"), "{e}");
    }

    #[test]
    fn batch_order_is_a_permutation_per_epoch_and_replayable() {
        let mut a = BatchOrder::new(7, 10);
        let first: Vec<usize> = (0..10).map(|n| a.window(n)).collect();
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        let second: Vec<usize> = (10..20).map(|n| a.window(n)).collect();
        assert_ne!(first, second);
        let mut b = BatchOrder::new(7, 10);
        assert_eq!(b.window(13), second[3]);
        assert_eq!(b.window(2), first[2]);
    }
}
