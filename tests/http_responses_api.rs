//! OpenAI's Responses API (`/v1/responses`) over real HTTP: the response object, the stream's
//! numbered events in order, `text.format` constraints, sharing ratios, refusals by field, and
//! request counting.

mod support;

use serde_json::{json, Value};
use support::*;

/// The same conversation through `/v1/chat/completions`, greedy: its text and usage.
fn chat_answer(s: &Server, max_tokens: u64) -> (String, Value) {
    let (status, r) = s.post_json(
        "/v1/chat/completions",
        &json!({"model": MODEL, "max_tokens": max_tokens, "temperature": 0,
                "messages": [{"role": "system", "content": "You are brief."},
                             {"role": "user", "content": "Name three colours."}]}),
    );
    assert_eq!(status, 200, "{r}");
    let text = r["choices"][0]["message"]["content"].as_str().unwrap();
    (text.to_string(), r["usage"].clone())
}

/// The text of a response's only output message.
fn output_text(r: &Value) -> String {
    let output = r["output"].as_array().unwrap();
    assert_eq!(output.len(), 1, "{r}");
    let item = &output[0];
    assert_eq!(item["type"], "message");
    assert_eq!(item["role"], "assistant");
    assert!(item["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(item["content"][0]["type"], "output_text");
    assert_eq!(item["content"][0]["annotations"], json!([]));
    item["content"][0]["text"].as_str().unwrap().to_string()
}

#[test]
fn responses_answer_whole_and_streamed() {
    let s = Server::start(&["--allow-untrained-sharing"]);
    let body = json!({
        "model": MODEL, "instructions": "You are brief.", "input": "Name three colours.",
        "max_output_tokens": 6, "temperature": 0, "metadata": {"run": "1"}, "store": false,
    });
    let resp = s.post("/v1/responses", &body);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-epas-sharing-layers"], "0");
    let r: Value = resp.json().unwrap();
    assert!(r["id"].as_str().unwrap().starts_with("resp_"), "{r}");
    assert_eq!(r["object"], "response");
    assert_eq!(r["model"], MODEL);
    assert_eq!(r["instructions"], "You are brief.");
    assert_eq!(r["max_output_tokens"], 6);
    assert_eq!(r["metadata"], json!({"run": "1"}));
    assert_eq!(r["tools"], json!([]));
    assert_eq!(r["text"], json!({"format": {"type": "text"}}));
    assert_eq!(r["epas"]["sharing_layers"], 0);
    let text = output_text(&r);

    // The same turns through the chat endpoint give the same greedy text and token counts.
    let (chat_text, chat_usage) = chat_answer(&s, 6);
    assert_eq!(text, chat_text);
    let usage = &r["usage"];
    assert_eq!(usage["input_tokens"], chat_usage["prompt_tokens"]);
    assert_eq!(usage["output_tokens"], chat_usage["completion_tokens"]);
    assert_eq!(usage["total_tokens"], chat_usage["total_tokens"]);
    assert_eq!(usage["output_tokens_details"]["reasoning_tokens"], 0);
    assert!(usage["input_tokens_details"]["cached_tokens"].is_u64());
    // Six tokens do not finish an answer: incomplete, cut by max_output_tokens.
    assert_eq!(usage["output_tokens"], 6);
    assert_eq!(r["status"], "incomplete");
    assert_eq!(
        r["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(r["output"][0]["status"], "incomplete");

    // Streamed: the Responses events in order, numbered from 0, with the same text.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let resp = s.post("/v1/responses", &streamed);
    assert_eq!(resp.status(), 200);
    let events = read_named_sse(resp);
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str(), "{data}");
        assert_eq!(data["sequence_number"], i, "{data}");
    }
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let deltas = names
        .iter()
        .filter(|n| **n == "response.output_text.delta")
        .count();
    assert!(deltas > 0);
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]);
    assert_eq!(names, expected);
    let created = &events[0].1["response"];
    assert_eq!(created["status"], "in_progress");
    assert_eq!(created["output"], json!([]));
    assert_eq!(created["epas"]["sharing_layers"], 0);
    let item_id = events[2].1["item"]["id"].as_str().unwrap().to_string();
    let streamed_text: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| {
            assert_eq!(d["item_id"], item_id.as_str());
            assert_eq!(
                (d["output_index"].as_u64(), d["content_index"].as_u64()),
                (Some(0), Some(0))
            );
            d["delta"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(streamed_text, text);
    assert_eq!(events[deltas + 4].1["text"], text);
    let last = &events.last().unwrap().1["response"];
    assert_eq!(output_text(last), text);
    assert_eq!(last["usage"]["output_tokens"], 6);

    // Message items with content parts, and an answer that ends by itself: completed.
    let items = json!({
        "model": MODEL, "temperature": 0, "max_output_tokens": 200,
        "input": [
            {"role": "developer", "content": "You are brief."},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "Say hello."}]},
        ],
    });
    let (status, r) = s.post_json("/v1/responses", &items);
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["incomplete_details"], Value::Null);
    assert!(r["usage"]["output_tokens"].as_u64().unwrap() < 200);

    // text.format json_schema: the output is JSON of the schema.
    let schema = json!({"type": "object", "properties": {"colour": {"enum": ["red", "blue"]},
                        "count": {"type": "integer", "minimum": 1, "maximum": 9}},
                        "required": ["colour", "count"], "additionalProperties": false});
    let format = json!({"format": {"type": "json_schema", "name": "pick", "schema": schema,
                                   "strict": true}});
    let mut constrained = body.clone();
    constrained["text"] = format.clone();
    constrained["max_output_tokens"] = json!(60);
    let (status, r) = s.post_json("/v1/responses", &constrained);
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["text"], format);
    let value: Value = serde_json::from_str(&output_text(&r)).unwrap();
    assert!(
        ["red", "blue"].contains(&value["colour"].as_str().unwrap()),
        "{value}"
    );
    assert!(
        (1..=9).contains(&value["count"].as_u64().unwrap()),
        "{value}"
    );
    assert_eq!(value.as_object().unwrap().len(), 2);

    // The sharing ratio: the field, and the model alias.
    let mut shared = body.clone();
    shared["sharing_ratio"] = json!(0.5);
    let resp = s.post("/v1/responses", &shared);
    assert_eq!(resp.headers()["x-epas-sharing-layers"], "15");
    let r: Value = resp.json().unwrap();
    assert_eq!(r["epas"]["sharing_layers"], 15);
    let mut aliased = body.clone();
    aliased["model"] = json!(format!("{MODEL}@0.25"));
    aliased["stream"] = json!(true);
    let events = read_named_sse(s.post("/v1/responses", &aliased));
    assert_eq!(events[0].1["response"]["epas"]["sharing_layers"], 7);
    assert_eq!(
        events.last().unwrap().1["response"]["epas"]["sharing_layers"],
        7
    );
}

#[test]
fn refusals_name_their_field_and_every_request_is_counted() {
    let s = Server::start(&[]);
    let ok = json!({"model": MODEL, "input": "Hi", "max_output_tokens": 2});
    let with = |field: &str, value: Value| {
        let mut body = ok.clone();
        body[field] = value;
        body
    };
    let refusals = [
        (
            with("previous_response_id", json!("resp_1")),
            "previous_response_id",
        ),
        (
            with("tools", json!([{"type": "web_search_preview"}])),
            "tools[0].type",
        ),
        (with("tool_choice", json!("required")), "tool_choice"),
        (with("max_output_tokens", json!(0)), "max_output_tokens"),
        (
            with("max_output_tokens", json!(100000)),
            "max_output_tokens",
        ),
        (with("reasoning", json!({"effort": "low"})), "reasoning"),
        (
            with("text", json!({"format": {"type": "yaml"}})),
            "text.format.type",
        ),
        (
            with(
                "text",
                json!({"format": {"type": "json_schema", "name": "x",
                                           "schema": {"type": "nope"}}}),
            ),
            "text.format",
        ),
        (
            with(
                "input",
                json!([{"role": "user", "content": [
                {"type": "input_image", "image_url": "data:,"}]}]),
            ),
            "input[0].content[0].type",
        ),
        (with("metadata", json!({"a": 1})), "metadata.a"),
        (with("sharing_ratio", json!(0.5)), "sharing_ratio"),
        (with("temperature", json!(3)), "temperature"),
    ];
    for (body, param) in &refusals {
        let (status, r) = s.post_json("/v1/responses", body);
        assert_eq!(status, 400, "{body}: {r}");
        assert_eq!(r["error"]["param"], *param, "{body}: {r}");
    }
    let mut no_input = ok.clone();
    no_input.as_object_mut().unwrap().remove("input");
    let (status, r) = s.post_json("/v1/responses", &no_input);
    assert_eq!(
        (status, &r["error"]["param"]),
        (400, &json!("input")),
        "{r}"
    );
    let (status, r) = s.post_json("/v1/responses", &with("model", json!("gpt-5")));
    assert_eq!(status, 404, "{r}");
    assert_eq!(r["error"]["code"], "model_not_found");
    let (status, _) = s.post_json("/v1/responses", &ok);
    assert_eq!(status, 200);

    assert_eq!(s.metric("epas_requests_total{status=\"200\"}"), Some(1.0));
    assert_eq!(
        s.metric("epas_requests_total{status=\"400\"}"),
        Some(refusals.len() as f64 + 1.0)
    );
    assert_eq!(s.metric("epas_requests_total{status=\"404\"}"), Some(1.0));
    assert_eq!(
        s.metric("epas_requests_rejected_total{reason=\"invalid\"}"),
        Some(refusals.len() as f64 + 2.0)
    );
}
