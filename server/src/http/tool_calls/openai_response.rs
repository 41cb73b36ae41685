//! Answers read for calls in OpenAI's chat shapes: the message of a whole answer (`content`
//! null when there is none besides the calls, `tool_calls`, `finish_reason` `tool_calls`), and
//! stream chunks whose deltas carry content or one call each
//! (`delta.tool_calls[{index, id, type, function: {name, arguments}}]`).

use serde_json::{json, Map, Value};

use super::super::responses::Envelope;
use super::output::{Piece, ToolOutput};
use super::tools::FunctionCall;

/// The finish reason of an answer that made calls (`called`), or its own.
pub(crate) fn finish_reason(called: bool, reason: &str) -> &str {
    if called {
        "tool_calls"
    } else {
        reason
    }
}

/// The choice of a whole answer, `text`, read for calls.
pub(crate) fn answer_choice(
    envelope: &Envelope,
    index: usize,
    output: &ToolOutput,
    text: &str,
    finish: &str,
    logprobs: Value,
) -> Value {
    let read = output.read(text);
    let called = !read.calls.is_empty();
    let content = if called && read.content.is_empty() {
        Value::Null
    } else {
        json!(read.content)
    };
    let mut message = json!({"role": "assistant", "content": content});
    if called {
        let calls: Vec<Value> = read.calls.iter().map(call_json).collect();
        message["tool_calls"] = json!(calls);
    }
    envelope.message_choice(index, message, finish_reason(called, finish), logprobs)
}

/// The stream chunks of choice `index`'s `pieces`; the first chunk carries `logprobs` (and the
/// role when `first`). With `finish`, a last chunk gives the finish reason; without, a chunk is
/// sent even with no pieces when it is the choice's first or carries logprobs.
pub(crate) fn piece_chunks(
    envelope: &Envelope,
    index: usize,
    pieces: Vec<Piece>,
    mut first: bool,
    logprobs: Value,
    finish: Option<&str>,
) -> Vec<Value> {
    let mut chunks = Vec::with_capacity(pieces.len() + 1);
    let mut logprobs = Some(logprobs);
    for piece in pieces {
        let lp = logprobs.take().unwrap_or(Value::Null);
        chunks.push(match piece {
            Piece::Content(text) => envelope.chunk(index, &text, first, None, lp),
            Piece::Call { index: k, call } => {
                let mut delta = Map::new();
                delta.insert("tool_calls".into(), json!([call_delta(k, &call)]));
                envelope.delta_chunk(index, delta, first, None, lp)
            }
        });
        first = false;
    }
    let lp = logprobs.unwrap_or(Value::Null);
    match finish {
        Some(reason) => {
            chunks.push(envelope.delta_chunk(index, Map::new(), first, Some(reason), lp))
        }
        None if first || !lp.is_null() => chunks.push(envelope.chunk(index, "", first, None, lp)),
        None => {}
    }
    chunks
}

fn call_json(call: &FunctionCall) -> Value {
    json!({"id": call.id, "type": "function",
           "function": {"name": call.name, "arguments": call.arguments}})
}

fn call_delta(index: usize, call: &FunctionCall) -> Value {
    json!({"index": index, "id": call.id, "type": "function",
           "function": {"name": call.name, "arguments": call.arguments}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::responses::Endpoint;
    use crate::http::tool_calls::convention::Convention;
    use crate::http::tool_calls::tools::{FunctionTool, ToolChoice, ToolRequest};

    fn envelope() -> Envelope {
        Envelope {
            id: "chatcmpl-1".into(),
            created: 1,
            model: "m".into(),
            endpoint: Endpoint::Chat,
            epas: json!({}),
        }
    }

    fn output() -> ToolOutput {
        let request = ToolRequest {
            tools: vec![FunctionTool {
                name: "f".into(),
                description: None,
                parameters: None,
                strict: None,
            }],
            choice: ToolChoice::Auto,
            parallel: true,
        };
        ToolOutput::new(&request, Convention::Hermes).unwrap()
    }

    const CALL: &str = "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}</tool_call>";

    #[test]
    fn a_whole_answer_with_calls_has_them_in_the_message() {
        let choice = answer_choice(&envelope(), 0, &output(), CALL, "stop", Value::Null);
        let id = choice["message"]["tool_calls"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            choice,
            json!({"index": 0, "logprobs": null, "finish_reason": "tool_calls",
                   "message": {"role": "assistant", "content": null, "tool_calls": [
                       {"id": id, "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}})
        );
        let choice = answer_choice(&envelope(), 1, &output(), "Hi", "length", Value::Null);
        assert_eq!(
            choice,
            json!({"index": 1, "logprobs": null, "finish_reason": "length",
                   "message": {"role": "assistant", "content": "Hi"}})
        );
    }

    #[test]
    fn stream_chunks_carry_content_then_calls_then_the_finish() {
        let mut stream = output().stream();
        let mut pieces = stream.push("Sure ");
        pieces.extend(stream.push(CALL));
        let chunks = piece_chunks(&envelope(), 0, pieces, true, json!({"content": []}), None);
        let choices: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]).collect();
        assert_eq!(choices.len(), 2);
        assert_eq!(
            choices[0]["delta"],
            json!({"role": "assistant", "content": "Sure"})
        );
        assert_eq!(choices[0]["logprobs"], json!({"content": []}));
        let id = choices[1]["delta"]["tool_calls"][0]["id"].clone();
        assert_eq!(
            choices[1]["delta"],
            json!({"tool_calls": [{"index": 0, "id": id, "type": "function",
                                   "function": {"name": "f", "arguments": "{\"a\":1}"}}]})
        );
        assert_eq!(choices[1]["logprobs"], Value::Null);
        let end = piece_chunks(
            &envelope(),
            0,
            stream.finish(" "),
            false,
            Value::Null,
            Some(finish_reason(stream.called(), "stop")),
        );
        assert_eq!(end.len(), 1);
        assert_eq!(end[0]["choices"][0]["delta"], json!({}));
        assert_eq!(end[0]["choices"][0]["finish_reason"], "tool_calls");
        let held = piece_chunks(&envelope(), 0, vec![], true, Value::Null, None);
        assert_eq!(
            held[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert!(piece_chunks(&envelope(), 0, vec![], false, Value::Null, None).is_empty());
    }
}
