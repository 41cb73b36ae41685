//! Prompt text: synthetic words, windows cut from a corpus, or the lines of a file (JSON strings
//! in a `.jsonl` file).
//!
//! Token counts are approximate, because the tool does not know the server's tokenizer: a
//! synthetic prompt of N tokens is N common English words (about one BPE token each with a
//! leading space), and a corpus prompt of N tokens is `ceil(0.8 N)` words of running text
//! (English prose runs about 1.25 tokens per word). The report shows the server's own
//! count (`usage.prompt_tokens`) whenever it sends one.

use std::path::{Path, PathBuf};

use rand::Rng;

use crate::error::{LoadtestError, Result};

/// Words of running text per requested token in a corpus window.
pub const CORPUS_WORDS_PER_TOKEN: f64 = 0.8;

/// Plain, frequent words: each is a single token in common BPE vocabularies.
#[rustfmt::skip]
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so", "no", "people", "time", "year",
    "world", "state", "work", "life", "day", "part", "place", "case", "week", "company",
    "system", "program", "question", "government", "number", "night", "point", "home", "water",
    "room", "mother", "area", "money", "story", "fact", "month", "lot", "right", "study",
    "book", "eye", "job", "word", "business", "issue", "side", "kind", "head", "house",
    "service", "friend", "father", "power", "hour", "game", "line", "end", "member", "law",
    "car", "city", "community", "name", "president", "team", "minute", "idea", "kid", "body",
    "information", "back", "parent", "face", "others", "level", "office", "door", "health",
    "person", "art", "war", "history", "party", "result", "change", "morning", "reason",
    "research", "girl", "guy", "moment", "air", "teacher", "force", "education", "good", "new",
    "first", "last", "long", "great", "little", "own", "other", "old", "big", "high",
    "different", "small", "large", "next", "early", "young", "important", "few", "public",
    "bad", "same", "able", "make", "know", "take", "see", "come", "think", "look", "want",
    "give", "use", "find", "tell", "ask", "seem", "feel", "try", "leave", "call",
];

pub enum PromptSource {
    Synthetic,
    /// The words of a text, in order.
    Corpus {
        words: Vec<String>,
    },
    /// Whole prompts, one per line, used in order and then again from the top.
    Lines {
        prompts: Vec<String>,
    },
}

pub struct Prompt {
    pub text: String,
    /// The tool's estimate of its token count (see the module comment).
    pub approx_tokens: usize,
}

impl PromptSource {
    /// A corpus is a text file or a folder whose files (recursively, sorted by path) are read
    /// one after another.
    pub fn corpus(path: &Path) -> Result<Self> {
        let mut files = Vec::new();
        collect_files(path, &mut files)?;
        files.sort();
        let mut words = Vec::new();
        for file in &files {
            let bytes = std::fs::read(file).map_err(|e| LoadtestError::io(file, e))?;
            words.extend(
                String::from_utf8_lossy(&bytes)
                    .split_whitespace()
                    .map(str::to_string),
            );
        }
        if words.is_empty() {
            return Err(LoadtestError::BadFile {
                path: path.into(),
                message: "the corpus has no text".into(),
            });
        }
        Ok(PromptSource::Corpus { words })
    }

    /// The prompts of a file, in order: one per non-blank line, or, in a `.jsonl` file, one
    /// JSON string per non-blank line (so that a prompt can hold newlines).
    pub fn lines(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadtestError::io(path, e))?;
        let bad = |message: String| LoadtestError::BadFile {
            path: path.into(),
            message,
        };
        let jsonl = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
        let mut prompts = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if !jsonl {
                prompts.push(line.to_string());
                continue;
            }
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(serde_json::Value::String(p)) if !p.is_empty() => prompts.push(p),
                Ok(serde_json::Value::String(_)) => {
                    return Err(bad(format!("line {}: an empty prompt", i + 1)))
                }
                _ => {
                    return Err(bad(format!(
                        "line {}: not a JSON string (a .jsonl prompt file has one per line)",
                        i + 1
                    )))
                }
            }
        }
        if prompts.is_empty() {
            return Err(bad(if jsonl {
                "no prompts (one JSON string per line) in the file".into()
            } else {
                "no prompts (one per line) in the file".into()
            }));
        }
        Ok(PromptSource::Lines { prompts })
    }

    /// The prompt of request `index`, about `tokens` tokens long (ignored for `Lines`).
    pub fn make(&self, index: usize, tokens: usize, rng: &mut impl Rng) -> Prompt {
        match self {
            PromptSource::Synthetic => {
                let words: Vec<&str> = (0..tokens)
                    .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                    .collect();
                Prompt {
                    text: words.join(" "),
                    approx_tokens: tokens,
                }
            }
            PromptSource::Corpus { words } => {
                let n = ((tokens as f64 * CORPUS_WORDS_PER_TOKEN).ceil() as usize).max(1);
                let start = rng.random_range(0..words.len());
                // Past the end the window continues from the top of the corpus.
                let text: Vec<&str> = (0..n)
                    .map(|i| words[(start + i) % words.len()].as_str())
                    .collect();
                Prompt {
                    text: text.join(" "),
                    approx_tokens: tokens,
                }
            }
            PromptSource::Lines { prompts } => {
                let text = prompts[index % prompts.len()].clone();
                let words = text.split_whitespace().count();
                Prompt {
                    approx_tokens: ((words as f64 / CORPUS_WORDS_PER_TOKEN).round() as usize)
                        .max(1),
                    text,
                }
            }
        }
    }
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| LoadtestError::io(path, e))?;
    if meta.is_file() {
        out.push(path.to_path_buf());
    } else if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| LoadtestError::io(path, e))? {
            let entry = entry.map_err(|e| LoadtestError::io(path, e))?;
            collect_files(&entry.path(), out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn synthetic_prompts_have_the_word_count() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let p = PromptSource::Synthetic.make(0, 128, &mut rng);
        assert_eq!(p.text.split(' ').count(), 128);
        assert_eq!(p.approx_tokens, 128);
    }

    #[test]
    fn corpus_windows_wrap_and_lines_cycle() {
        let dir = std::env::temp_dir().join(format!("epas-lt-prompts-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.txt"), "one two three").unwrap();
        std::fs::write(dir.join("sub/b.txt"), "four\nfive").unwrap();
        let corpus = PromptSource::corpus(&dir).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        // 8 tokens -> ceil(6.4) = 7 words out of 5: the window wraps.
        let p = corpus.make(0, 8, &mut rng);
        assert_eq!(p.text.split(' ').count(), 7);
        std::fs::write(dir.join("lines.txt"), "first prompt\n\n second \n").unwrap();
        let lines = PromptSource::lines(&dir.join("lines.txt")).unwrap();
        assert_eq!(lines.make(0, 1, &mut rng).text, "first prompt");
        assert_eq!(lines.make(3, 1, &mut rng).text, "second");
        std::fs::write(dir.join("empty.txt"), " \n").unwrap();
        assert!(PromptSource::lines(&dir.join("empty.txt")).is_err());
        assert!(PromptSource::corpus(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn jsonl_prompts_keep_their_newlines_and_bad_lines_are_named() {
        let dir = std::env::temp_dir().join(format!("epas-lt-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.JSONL");
        std::fs::write(
            &file,
            "\"one\\ntwo words\"\n\n  \"caf\\u00e9 \\\"x\\\"\"  \n",
        )
        .unwrap();
        let source = PromptSource::lines(&file).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let first = source.make(0, 1, &mut rng);
        assert_eq!(first.text, "one\ntwo words");
        // 3 words at 0.8 words per token.
        assert_eq!(first.approx_tokens, 4);
        assert_eq!(source.make(1, 1, &mut rng).text, "caf\u{e9} \"x\"");
        assert_eq!(source.make(2, 1, &mut rng).text, "one\ntwo words");
        for (content, message) in [
            ("\"ok\"\nplain text\n", "line 2: not a JSON string"),
            ("{\"prompt\": \"x\"}\n", "line 1: not a JSON string"),
            ("\"ok\"\n\n\"\"\n", "line 3: an empty prompt"),
            ("\n \n", "no prompts (one JSON string per line)"),
        ] {
            std::fs::write(&file, content).unwrap();
            let e = PromptSource::lines(&file).err().unwrap().to_string();
            assert!(
                e.contains(message) && e.contains("p.JSONL"),
                "{content:?}: {e}"
            );
        }
        // Other extensions keep one prompt per line, quotes and all.
        let txt = dir.join("p.txt");
        std::fs::write(&txt, "\"quoted\"\n").unwrap();
        let plain = PromptSource::lines(&txt).unwrap();
        assert_eq!(plain.make(0, 1, &mut rng).text, "\"quoted\"");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
