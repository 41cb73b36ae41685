//! Splits generated text, as it streams in, into plain text and the spans a model writes calls
//! in, holding back only what may still become a call: in the Hermes convention a partial
//! `<tool_call>` tag at the end and an unclosed tag's contents; in the Llama 3 convention an
//! answer that starts with `{`, until it ends.

use super::convention::Convention;

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// A span of generated text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Segment {
    Text(String),
    /// Where the model wrote calls: `raw` is the whole span, `body` the JSON inside it.
    Calls {
        raw: String,
        body: String,
    },
}

#[derive(Debug, Clone)]
pub(super) enum Splitter {
    Tags { held: String, in_call: bool },
    Answer { held: String, state: AnswerState },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AnswerState {
    /// Only whitespace so far.
    Undecided,
    Text,
    Json,
}

impl Splitter {
    pub fn new(convention: Convention) -> Self {
        match convention {
            Convention::Hermes => Self::Tags {
                held: String::new(),
                in_call: false,
            },
            Convention::Llama3Json => Self::Answer {
                held: String::new(),
                state: AnswerState::Undecided,
            },
        }
    }

    /// Takes the next piece of text, adding the segments that became final to `out`.
    pub fn push(&mut self, text: &str, out: &mut Vec<Segment>) {
        match self {
            Self::Tags { held, in_call } => {
                held.push_str(text);
                split_tags(held, in_call, out);
            }
            Self::Answer { held, state } => {
                held.push_str(text);
                if *state == AnswerState::Undecided {
                    *state = match held.trim_start().chars().next() {
                        None => AnswerState::Undecided,
                        Some('{') => AnswerState::Json,
                        Some(_) => AnswerState::Text,
                    };
                }
                if *state == AnswerState::Text && !held.is_empty() {
                    out.push(Segment::Text(std::mem::take(held)));
                }
            }
        }
    }

    /// The end of the text: what is still held becomes final.
    pub fn finish(&mut self, out: &mut Vec<Segment>) {
        let (held, calls) = match self {
            Self::Tags { held, in_call } => {
                if *in_call {
                    held.insert_str(0, OPEN);
                }
                *in_call = false;
                (std::mem::take(held), false)
            }
            Self::Answer { held, state } => (std::mem::take(held), *state == AnswerState::Json),
        };
        if calls {
            out.push(Segment::Calls {
                raw: held.clone(),
                body: held,
            });
        } else if !held.is_empty() {
            out.push(Segment::Text(held));
        }
    }
}

fn split_tags(held: &mut String, in_call: &mut bool, out: &mut Vec<Segment>) {
    loop {
        if *in_call {
            let Some(end) = held.find(CLOSE) else {
                return;
            };
            let body = held[..end].to_string();
            held.drain(..end + CLOSE.len());
            out.push(Segment::Calls {
                raw: format!("{OPEN}{body}{CLOSE}"),
                body,
            });
            *in_call = false;
        } else if let Some(start) = held.find(OPEN) {
            if start > 0 {
                out.push(Segment::Text(held[..start].to_string()));
            }
            held.drain(..start + OPEN.len());
            *in_call = true;
        } else {
            let keep = partial_tag_len(held);
            let done = held.len() - keep;
            if done > 0 {
                out.push(Segment::Text(held[..done].to_string()));
                held.drain(..done);
            }
            return;
        }
    }
}

/// The length of the longest end of `text` that begins the opening tag (ASCII, so the cut is a
/// character boundary).
fn partial_tag_len(text: &str) -> usize {
    (1..OPEN.len())
        .rev()
        .find(|&n| text.as_bytes().ends_with(&OPEN.as_bytes()[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Segment {
        Segment::Text(s.into())
    }

    fn calls(body: &str) -> Segment {
        Segment::Calls {
            raw: format!("{OPEN}{body}{CLOSE}"),
            body: body.into(),
        }
    }

    /// Segments of `pieces` fed in order, adjacent text merged.
    fn split(convention: Convention, pieces: &[&str]) -> Vec<Segment> {
        let mut s = Splitter::new(convention);
        let mut out = Vec::new();
        for p in pieces {
            s.push(p, &mut out);
        }
        s.finish(&mut out);
        let mut merged: Vec<Segment> = Vec::new();
        for seg in out {
            match (merged.last_mut(), seg) {
                (Some(Segment::Text(a)), Segment::Text(b)) => a.push_str(&b),
                (_, seg) => merged.push(seg),
            }
        }
        merged
    }

    #[test]
    fn hermes_tags_split_out_at_every_cut() {
        let whole =
            "Sure. <tool_call>\n{\"a\": 1}\n</tool_call>\n<tool_call>{}</tool_call> done <tool_c";
        let expected = vec![
            text("Sure. "),
            calls("\n{\"a\": 1}\n"),
            text("\n"),
            calls("{}"),
            text(" done <tool_c"),
        ];
        for cut in 0..=whole.len() {
            let (a, b) = whole.split_at(cut);
            assert_eq!(split(Convention::Hermes, &[a, b]), expected, "cut at {cut}");
        }
        let bytes: Vec<String> = whole.chars().map(String::from).collect();
        let pieces: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(split(Convention::Hermes, &pieces), expected);
    }

    #[test]
    fn held_text_is_only_what_may_begin_a_tag() {
        let mut s = Splitter::new(Convention::Hermes);
        let mut out = Vec::new();
        s.push("a <tool", &mut out);
        assert_eq!(out, vec![text("a ")]);
        out.clear();
        s.push("s> and <", &mut out);
        assert_eq!(out, vec![text("<tools> and ")]);
        out.clear();
        s.push("tool_call>{\"x\"", &mut out);
        assert!(out.is_empty());
        s.finish(&mut out);
        // An unclosed call stays text, tag included.
        assert_eq!(out, vec![text("<tool_call>{\"x\"")]);
    }

    #[test]
    fn a_llama_answer_is_calls_when_it_starts_with_a_brace() {
        let answer = " {\"name\": \"f\", \"parameters\": {}}";
        for cut in 0..=answer.len() {
            let (a, b) = answer.split_at(cut);
            assert_eq!(
                split(Convention::Llama3Json, &[a, b]),
                vec![Segment::Calls {
                    raw: answer.into(),
                    body: answer.into()
                }]
            );
        }
        let mut s = Splitter::new(Convention::Llama3Json);
        let mut out = Vec::new();
        s.push("  ", &mut out);
        assert!(out.is_empty());
        s.push("It is {warm}", &mut out);
        assert_eq!(out, vec![text("  It is {warm}")]);
        assert_eq!(split(Convention::Llama3Json, &["  "]), vec![text("  ")]);
    }
}
