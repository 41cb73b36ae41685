//! Generated text read into content and calls, as it streams or whole (the same reading, so a
//! streamed answer reassembles to the whole one). Text that is not a well-formed call of an
//! offered function, and calls past the number allowed, stay content. The content is the text
//! outside the calls, except that whitespace at its end is dropped when calls were made.

use std::sync::Arc;

use super::super::generation::new_id;
use super::convention::Convention;
use super::read_calls::read_calls;
use super::split::{Segment, Splitter};
use super::tools::{FunctionCall, ToolRequest};

/// How a request's output is read for calls.
#[derive(Debug, Clone)]
pub(crate) struct ToolOutput {
    convention: Convention,
    names: Arc<[String]>,
    max_calls: Option<usize>,
    /// What the ids of the calls read start with (`call_`: OpenAI's form).
    id_prefix: &'static str,
}

/// A piece of a streamed answer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Content(String),
    /// The answer's `index`th call.
    Call {
        index: usize,
        call: FunctionCall,
    },
}

/// A whole answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ReadOutput {
    pub content: String,
    pub calls: Vec<FunctionCall>,
}

impl ToolOutput {
    /// How the output of `request` is read; `None` when its choice is `none`.
    pub fn new(request: &ToolRequest, convention: Convention) -> Option<Self> {
        request.shown()?;
        Some(Self {
            convention,
            names: request.tools.iter().map(|t| t.name.clone()).collect(),
            max_calls: request.max_calls(),
            id_prefix: "call_",
        })
    }

    /// The same reading, with call ids that start with `prefix` (`toolu_`: Anthropic's form).
    pub fn with_id_prefix(self, prefix: &'static str) -> Self {
        Self {
            id_prefix: prefix,
            ..self
        }
    }

    pub fn stream(&self) -> CallStream {
        CallStream {
            output: self.clone(),
            splitter: Splitter::new(self.convention),
            calls: 0,
            held_space: String::new(),
        }
    }

    pub fn read(&self, text: &str) -> ReadOutput {
        let mut stream = self.stream();
        let mut pieces = stream.push(text);
        pieces.extend(stream.finish(""));
        let mut whole = ReadOutput::default();
        for piece in pieces {
            match piece {
                Piece::Content(text) => whole.content.push_str(&text),
                Piece::Call { call, .. } => whole.calls.push(call),
            }
        }
        whole
    }
}

/// One answer's text read as it streams.
#[derive(Debug, Clone)]
pub(crate) struct CallStream {
    output: ToolOutput,
    splitter: Splitter,
    calls: usize,
    /// Whitespace at the end of the content so far, released when more content follows (or
    /// at the end, when no call was made).
    held_space: String,
}

impl CallStream {
    /// The pieces that became final with `text`.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut segments = Vec::new();
        self.splitter.push(text, &mut segments);
        self.pieces(segments)
    }

    /// The last pieces, `text` (the end of the generated text) included.
    pub fn finish(&mut self, text: &str) -> Vec<Piece> {
        let mut segments = Vec::new();
        self.splitter.push(text, &mut segments);
        self.splitter.finish(&mut segments);
        let mut pieces = self.pieces(segments);
        let space = std::mem::take(&mut self.held_space);
        if self.calls == 0 && !space.is_empty() {
            push_content(&mut pieces, &space);
        }
        pieces
    }

    /// Whether the answer made calls.
    pub fn called(&self) -> bool {
        self.calls > 0
    }

    fn pieces(&mut self, segments: Vec<Segment>) -> Vec<Piece> {
        let mut pieces = Vec::new();
        for segment in segments {
            match segment {
                Segment::Text(text) => self.content(&text, &mut pieces),
                Segment::Calls { raw, body } => {
                    let room = self.output.max_calls.map(|m| m.saturating_sub(self.calls));
                    let read = read_calls(&body, self.output.convention, &self.output.names)
                        .filter(|calls| room.is_none_or(|room| calls.len() <= room));
                    match read {
                        Some(calls) => {
                            for c in calls {
                                let call = FunctionCall {
                                    id: new_id(self.output.id_prefix),
                                    name: c.name,
                                    arguments: c.arguments,
                                };
                                pieces.push(Piece::Call {
                                    index: self.calls,
                                    call,
                                });
                                self.calls += 1;
                            }
                        }
                        None => self.content(&raw, &mut pieces),
                    }
                }
            }
        }
        pieces
    }

    fn content(&mut self, text: &str, pieces: &mut Vec<Piece>) {
        self.held_space.push_str(text);
        let body = self.held_space.trim_end().len();
        if body > 0 {
            let ready: String = self.held_space.drain(..body).collect();
            push_content(pieces, &ready);
        }
    }
}

/// Appends `text` to the last piece when it is content.
fn push_content(pieces: &mut Vec<Piece>, text: &str) {
    match pieces.last_mut() {
        Some(Piece::Content(last)) => last.push_str(text),
        _ => pieces.push(Piece::Content(text.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::tool_calls::tools::{FunctionTool, ToolChoice};

    fn output(convention: Convention, choice: ToolChoice, parallel: bool) -> ToolOutput {
        let tool = |name: &str| FunctionTool {
            name: name.into(),
            description: None,
            parameters: None,
            strict: None,
        };
        let request = ToolRequest {
            tools: vec![tool("f"), tool("g")],
            choice,
            parallel,
        };
        ToolOutput::new(&request, convention).unwrap()
    }

    fn hermes() -> ToolOutput {
        output(Convention::Hermes, ToolChoice::Auto, true)
    }

    /// (content, [(name, arguments)]) of a whole answer.
    fn read(output: &ToolOutput, text: &str) -> (String, Vec<(String, String)>) {
        let r = output.read(text);
        let calls = r.calls.into_iter().map(|c| {
            assert!(c.id.starts_with("call_") && c.id.len() == 29, "{}", c.id);
            (c.name, c.arguments)
        });
        (r.content, calls.collect())
    }

    fn call(name: &str, arguments: &str) -> (String, String) {
        (name.into(), arguments.into())
    }

    /// The pieces of `pieces` fed in order, with the call ids left out.
    fn streamed(
        output: &ToolOutput,
        pieces: &[&str],
    ) -> (Vec<String>, Vec<(usize, String, String)>) {
        let mut s = output.stream();
        let mut all = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            if i + 1 == pieces.len() {
                all.extend(s.finish(p));
            } else {
                all.extend(s.push(p));
            }
        }
        let mut content = Vec::new();
        let mut calls = Vec::new();
        for piece in all {
            match piece {
                Piece::Content(t) => content.push(t),
                Piece::Call { index, call } => calls.push((index, call.name, call.arguments)),
            }
        }
        (content, calls)
    }

    #[test]
    fn text_without_calls_is_content_exactly() {
        for text in [
            "",
            "  Hello <b>world</b>\n\n",
            "a <tool_call> never closed",
            "x <tool_call>{\"name\": \"zz\"}</tool_call> y",
        ] {
            assert_eq!(
                read(&hermes(), text),
                (text.to_string(), vec![]),
                "{text:?}"
            );
        }
    }

    #[test]
    fn calls_are_read_and_the_whitespace_after_the_content_dropped() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>\n\
                    <tool_call>\n{\"name\": \"g\", \"arguments\": {}}\n</tool_call>\n";
        assert_eq!(
            read(&hermes(), text),
            (
                "Let me check.".into(),
                vec![call("f", r#"{"city":"Oslo"}"#), call("g", "{}")]
            )
        );
        let bad_then_good =
            "<tool_call>{\"name\": \"h\"}</tool_call> <tool_call>{\"name\": \"f\"}</tool_call>";
        assert_eq!(
            read(&hermes(), bad_then_good),
            (
                "<tool_call>{\"name\": \"h\"}</tool_call>".into(),
                vec![call("f", "{}")]
            )
        );
    }

    #[test]
    fn calls_past_the_limit_stay_content() {
        let two =
            "<tool_call>{\"name\": \"f\"}</tool_call>\n<tool_call>{\"name\": \"g\"}</tool_call>";
        for single in [
            output(Convention::Hermes, ToolChoice::Auto, false),
            output(Convention::Hermes, ToolChoice::Function("f".into()), true),
        ] {
            assert_eq!(
                read(&single, two),
                (
                    "\n<tool_call>{\"name\": \"g\"}</tool_call>".into(),
                    vec![call("f", "{}")]
                )
            );
        }
        let llama = output(Convention::Llama3Json, ToolChoice::Required, false);
        let answer = "{\"name\": \"f\", \"parameters\": {}}; {\"name\": \"g\", \"parameters\": {}}";
        assert_eq!(read(&llama, answer), (answer.into(), vec![]));
        let llama = output(Convention::Llama3Json, ToolChoice::Required, true);
        assert_eq!(
            read(&llama, answer),
            (String::new(), vec![call("f", "{}"), call("g", "{}")])
        );
    }

    #[test]
    fn a_stream_cut_anywhere_gives_the_whole_reading_and_never_shows_a_marker() {
        let text = "I'll call it. <tool_call>\n{\"name\": \"f\", \"arguments\": {\"q\": \"<tool_call>\"}}\n</tool_call>\n\
                    <tool_call>{\"name\": \"g\"}</tool_call> then <tool_c";
        let whole = read(&hermes(), text);
        assert_eq!(whole.0, "I'll call it. \n then <tool_c");
        for a in 0..=text.len() {
            for b in (a..=text.len()).step_by(7) {
                let (content, calls) = streamed(&hermes(), &[&text[..a], &text[a..b], &text[b..]]);
                assert_eq!(content.concat(), whole.0, "cuts {a} {b}");
                let calls: Vec<(String, String)> = calls
                    .into_iter()
                    .enumerate()
                    .map(|(i, (index, name, arguments))| {
                        assert_eq!(i, index);
                        (name, arguments)
                    })
                    .collect();
                assert_eq!(calls, whole.1, "cuts {a} {b}");
                for piece in &content {
                    assert!(!piece.contains("tool_call"), "cuts {a} {b}: {piece:?}");
                    assert!(!piece.is_empty());
                }
            }
        }
    }

    #[test]
    fn content_streams_as_it_comes_with_only_a_possible_marker_held() {
        let mut s = hermes().stream();
        assert_eq!(s.push("Hello"), vec![Piece::Content("Hello".into())]);
        assert_eq!(
            s.push(" there <tool"),
            vec![Piece::Content(" there".into())]
        );
        assert_eq!(s.push("box>"), vec![Piece::Content(" <toolbox>".into())]);
        assert_eq!(s.push("\n"), vec![]);
        assert_eq!(s.finish(""), vec![Piece::Content("\n".into())]);
        assert!(!s.called());
    }

    #[test]
    fn a_llama_answer_reads_the_same_streamed() {
        let llama = output(Convention::Llama3Json, ToolChoice::Auto, true);
        let answer = "{\"name\": \"g\", \"parameters\": {\"n\": 1}}";
        for cut in 0..=answer.len() {
            let (content, calls) = streamed(&llama, &[&answer[..cut], &answer[cut..]]);
            assert!(content.is_empty());
            assert_eq!(calls, vec![(0, "g".into(), r#"{"n":1}"#.into())]);
        }
        assert_eq!(
            read(&llama, "Sunny {\"name\": \"g\"}"),
            ("Sunny {\"name\": \"g\"}".into(), vec![])
        );
    }
}
