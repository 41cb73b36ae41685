//! Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`) over real HTTP: the
//! message shape, the stream's events in order, stop sequences, prefill, sharing ratios, tool
//! use (forced calls, their stream events, tool results in the conversation), Anthropic's error
//! shape from every layer, `x-api-key`, and request counting.

mod support;

use serde_json::{json, Value};
use support::*;

fn conversation() -> Value {
    json!([{"role": "user", "content": "What is the capital of France?"}])
}

/// The same conversation through `/v1/chat/completions`, greedy: its text and usage.
fn chat_answer(s: &Server, max_tokens: u64) -> (String, Value) {
    let (status, r) = s.post_json(
        "/v1/chat/completions",
        &json!({"model": MODEL, "max_tokens": max_tokens, "temperature": 0,
                "messages": [{"role": "system", "content": "You are brief."},
                             {"role": "user", "content": "What is the capital of France?"}]}),
    );
    assert_eq!(status, 200, "{r}");
    let text = r["choices"][0]["message"]["content"].as_str().unwrap();
    (text.to_string(), r["usage"].clone())
}

#[test]
fn messages_answer_as_anthropic_does_whole_and_streamed() {
    let s = Server::start(&["--allow-untrained-sharing"]);
    let body = json!({
        "model": MODEL, "max_tokens": 12, "temperature": 0,
        "system": [{"type": "text", "text": "You are brief."}],
        "messages": conversation(), "metadata": {"user_id": "u1"},
    });
    let resp = s
        .client
        .post(s.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-epas-sharing-layers"], "0");
    let r: Value = resp.json().unwrap();
    assert!(r["id"].as_str().unwrap().starts_with("msg_"), "{r}");
    assert_eq!(r["type"], "message");
    assert_eq!(r["role"], "assistant");
    assert_eq!(r["model"], MODEL);
    assert_eq!(r["content"].as_array().unwrap().len(), 1);
    assert_eq!(r["content"][0]["type"], "text");
    let text = r["content"][0]["text"].as_str().unwrap().to_string();

    // The same turns through the chat endpoint give the same greedy text and token counts.
    let (chat_text, chat_usage) = chat_answer(&s, 12);
    assert_eq!(text, chat_text);
    assert_eq!(r["usage"]["input_tokens"], chat_usage["prompt_tokens"]);
    assert_eq!(r["usage"]["output_tokens"], chat_usage["completion_tokens"]);
    let expected_stop = if r["usage"]["output_tokens"] == 12 {
        "max_tokens"
    } else {
        "end_turn"
    };
    assert_eq!(r["stop_reason"], expected_stop, "{r}");
    assert_eq!(r["stop_sequence"], Value::Null);
    assert_eq!(r["epas"]["sharing_layers"], 0);

    // count_tokens counts what messages would read.
    let (status, count) = s.post_json(
        "/v1/messages/count_tokens",
        &json!({"model": MODEL, "system": "You are brief.", "messages": conversation()}),
    );
    assert_eq!(status, 200, "{count}");
    assert_eq!(count, json!({"input_tokens": r["usage"]["input_tokens"]}));

    // Streamed: Anthropic's events in order, each named as its type, with the same text.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let resp = s.post("/v1/messages", &streamed);
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = read_named_sse(resp);
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str(), "{data}");
    }
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let deltas = names
        .iter()
        .filter(|n| **n == "content_block_delta")
        .count();
    assert!(deltas > 0);
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    let start = &events[0].1["message"];
    assert_eq!(start["usage"]["input_tokens"], r["usage"]["input_tokens"]);
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["epas"]["sharing_layers"], 0);
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    let streamed_text: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(streamed_text, text);
    let delta = &events[names.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], expected_stop);
    assert_eq!(delta["usage"]["output_tokens"], r["usage"]["output_tokens"]);

    // A stop sequence met in the text ends it there and is reported.
    let stop = text
        .char_indices()
        .nth(3)
        .map(|(i, _)| &text[i..])
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a word after the third character");
    let mut stopped = body.clone();
    stopped["stop_sequences"] = json!(["\u{1F600}never", stop]);
    let (status, r) = s.post_json("/v1/messages", &stopped);
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["stop_reason"], "stop_sequence", "{r}");
    assert_eq!(r["stop_sequence"], stop);
    assert_eq!(r["content"][0]["text"], &text[..text.find(stop).unwrap()]);

    // A last assistant message is a prefill: the prompt ends with it and the answer goes on.
    let mut prefilled = body.clone();
    prefilled["messages"] =
        json!([conversation()[0], {"role": "assistant", "content": "The capital"}]);
    let (status, p) = s.post_json("/v1/messages", &prefilled);
    assert_eq!(status, 200, "{p}");
    assert!(
        p["usage"]["input_tokens"].as_u64().unwrap() > r["usage"]["input_tokens"].as_u64().unwrap()
    );
    assert_ne!(p["content"][0]["text"], text);

    // The sharing ratio: the field, and the model alias.
    let mut shared = body.clone();
    shared["sharing_ratio"] = json!(0.5);
    let resp = s.post("/v1/messages", &shared);
    assert_eq!(resp.headers()["x-epas-sharing-layers"], "15");
    let r: Value = resp.json().unwrap();
    assert_eq!(r["epas"]["sharing_layers"], 15);
    assert_eq!(r["epas"]["sharing_ratio"], 0.5);
    let mut aliased = body.clone();
    aliased["model"] = json!(format!("{MODEL}@0.25"));
    aliased["stream"] = json!(true);
    let events = read_named_sse(s.post("/v1/messages", &aliased));
    assert_eq!(events[0].1["message"]["epas"]["sharing_layers"], 7);
    assert_eq!(events[0].1["message"]["model"], format!("{MODEL}@0.25"));
}

fn weather_tool() -> Value {
    json!({"name": "get_weather", "description": "The current weather in a city",
           "input_schema": {"type": "object",
                            "properties": {"city": {"enum": ["Paris", "Rome", "Oslo"]},
                                           "unit": {"enum": ["celsius", "fahrenheit"]}},
                            "required": ["city", "unit"], "additionalProperties": false}})
}

/// A `get_weather` input the schema allows.
fn assert_weather_input(input: &Value) {
    let fields = input.as_object().expect("an object");
    assert_eq!(fields.len(), 2, "{input}");
    assert!(
        ["Paris", "Rome", "Oslo"].contains(&input["city"].as_str().unwrap()),
        "{input}"
    );
    assert!(
        ["celsius", "fahrenheit"].contains(&input["unit"].as_str().unwrap()),
        "{input}"
    );
}

#[test]
fn a_forced_tool_is_used_whole_and_streamed_and_its_result_continues_the_conversation() {
    let s = Server::start(&[]);
    let question = json!([{"role": "user", "content": "What is the weather in Paris?"}]);
    let body = json!({
        "model": MODEL, "max_tokens": 60, "temperature": 0, "messages": question,
        "tools": [weather_tool(), {"name": "current_time", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "get_weather"},
    });
    let (status, r) = s.post_json("/v1/messages", &body);
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["stop_reason"], "tool_use", "{r}");
    assert_eq!(r["stop_sequence"], Value::Null);
    let content = r["content"].as_array().unwrap();
    assert_eq!(content.len(), 1, "{r}");
    let call = &content[0];
    assert_eq!(call["type"], "tool_use");
    assert_eq!(call["name"], "get_weather");
    let id = call["id"].as_str().unwrap();
    assert!(id.starts_with("toolu_") && id.len() == 30, "{id}");
    assert_weather_input(&call["input"]);

    // Streamed: the tool_use block opens with an empty input, whose JSON comes in deltas.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = read_named_sse(s.post("/v1/messages", &streamed));
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let block = &events[2].1["content_block"];
    assert_eq!(events[2].1["index"], 0);
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "get_weather");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["input"], json!({}));
    let delta = &events[3].1["delta"];
    assert_eq!(delta["type"], "input_json_delta");
    let input: Value = serde_json::from_str(delta["partial_json"].as_str().unwrap()).unwrap();
    assert_eq!(input, call["input"]);
    assert_eq!(events[5].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        events[5].1["usage"]["output_tokens"],
        r["usage"]["output_tokens"]
    );

    // The call and its result continue the conversation; the tools show in the prompt.
    let mut answered = body.clone();
    answered["messages"] = json!([
        question[0],
        {"role": "assistant", "content": content},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": id, "content": "18 degrees and sunny"}]},
    ]);
    answered["tool_choice"] = json!({"type": "none"});
    let (status, a) = s.post_json("/v1/messages", &answered);
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["content"][0]["type"], "text", "{a}");
    assert_ne!(a["stop_reason"], "tool_use");
    let count = |body: &Value| {
        let mut body = body.clone();
        for field in ["max_tokens", "temperature"] {
            body.as_object_mut().unwrap().remove(field);
        }
        let (status, c) = s.post_json("/v1/messages/count_tokens", &body);
        assert_eq!(status, 200, "{c}");
        c["input_tokens"].as_u64().unwrap()
    };
    assert_eq!(count(&body), r["usage"]["input_tokens"].as_u64().unwrap());
    assert_eq!(
        count(&answered),
        a["usage"]["input_tokens"].as_u64().unwrap()
    );
    let mut without_tools = body.clone();
    without_tools.as_object_mut().unwrap().remove("tools");
    without_tools.as_object_mut().unwrap().remove("tool_choice");
    assert!(count(&without_tools) < count(&body));
    // `tool_choice: none` hides the tools: the prompt is the one without them.
    let mut hidden = body.clone();
    hidden["tool_choice"] = json!({"type": "none"});
    assert_eq!(count(&hidden), count(&without_tools));

    // An unanswered tool_use is refused, naming the message.
    let mut unanswered = body.clone();
    unanswered["messages"] = json!([question[0], {"role": "assistant", "content": content},
                                     {"role": "user", "content": "and Rome?"}]);
    let (status, e) = s.post_json("/v1/messages", &unanswered);
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("messages[1].content: tool_use"),
        "{e}"
    );
}

/// The Anthropic error of a response: its status, `error.type` and `error.message`.
fn anthropic_error(resp: reqwest::blocking::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().unwrap();
    assert_eq!(body["type"], "error", "{body}");
    let error = &body["error"];
    (
        status,
        error["type"].as_str().unwrap().to_string(),
        error["message"].as_str().unwrap().to_string(),
    )
}

#[test]
fn errors_have_anthropics_shape_from_every_layer_and_are_counted() {
    const KEY: &str = "secret";
    let s = Server::start(&["--api-key", KEY, "--max-body-bytes", "4096"]);
    let post = |path: &str, body: &Value| {
        s.client
            .post(s.url(path))
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
            .unwrap()
    };
    let ok = json!({"model": MODEL, "max_tokens": 2, "messages": conversation()});

    // Authentication: x-api-key or a bearer token; neither is a 401 in Anthropic's shape.
    assert_eq!(post("/v1/messages", &ok).status(), 200);
    let bearer = s
        .client
        .post(s.url("/v1/messages"))
        .bearer_auth(KEY)
        .json(&ok)
        .send()
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let unauthorized = s.client.post(s.url("/v1/messages")).json(&ok).send();
    let (status, kind, message) = anthropic_error(unauthorized.unwrap());
    assert_eq!((status, kind.as_str()), (401, "authentication_error"));
    assert!(message.contains("x-api-key"), "{message}");
    let wrong = s
        .client
        .post(s.url("/v1/messages/count_tokens"))
        .header("x-api-key", "wrong")
        .json(&ok)
        .send()
        .unwrap();
    assert_eq!(anthropic_error(wrong).1, "authentication_error");

    // Refusals of the body, each naming its field.
    let refusals = [
        (
            json!({"model": MODEL, "messages": conversation()}),
            "max_tokens: required",
        ),
        (
            json!({"model": MODEL, "max_tokens": 2, "messages": [{"role": "user",
                   "content": [{"type": "image", "source": {}}]}]}),
            "messages[0].content[0].type: content block type `image`",
        ),
        (
            json!({"model": MODEL, "max_tokens": 2, "messages": conversation(),
                   "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                   "tool_choice": {"type": "tool", "name": "g"}}),
            "tool_choice.name: no tool named `g`",
        ),
        (
            json!({"model": MODEL, "max_tokens": 2, "messages": conversation(),
                   "thinking": {"type": "enabled", "budget_tokens": 1024}}),
            "thinking: unsupported field `thinking`",
        ),
        (
            json!({"model": MODEL, "max_tokens": 2, "messages": conversation(),
                   "temperature": 1.5}),
            "temperature: must be between 0 and 1",
        ),
        (
            json!({"model": MODEL, "max_tokens": 2, "messages": conversation(),
                   "stop_sequences": vec!["x"; 17]}),
            "stop_sequences: at most 16 stop sequences",
        ),
        (
            json!({"model": MODEL, "max_tokens": 100000, "messages": conversation()}),
            "max_tokens:",
        ),
        (
            json!({"model": MODEL, "max_tokens": 2, "messages": conversation(),
                   "sharing_ratio": 0.5}),
            "sharing_ratio:",
        ),
    ];
    for (body, start) in refusals {
        let (status, kind, message) = anthropic_error(post("/v1/messages", &body));
        assert_eq!(
            (status, kind.as_str()),
            (400, "invalid_request_error"),
            "{body}"
        );
        assert!(message.starts_with(start), "{message:?} for {body}");
    }
    let unknown_model = json!({"model": "claude-sonnet-4-5", "max_tokens": 2,
                               "messages": conversation()});
    let (status, kind, message) = anthropic_error(post("/v1/messages", &unknown_model));
    assert_eq!((status, kind.as_str()), (404, "not_found_error"));
    assert!(message.contains("claude-sonnet-4-5"), "{message}");
    let (status, kind, message) =
        anthropic_error(post("/v1/messages/count_tokens", &unknown_model));
    assert_eq!((status, kind.as_str()), (400, "invalid_request_error"));
    assert!(
        message.starts_with("max_tokens: unsupported field"),
        "{message}"
    );
    let count_unknown = json!({"model": "claude-sonnet-4-5", "messages": conversation()});
    let (status, kind, _) = anthropic_error(post("/v1/messages/count_tokens", &count_unknown));
    assert_eq!((status, kind.as_str()), (404, "not_found_error"));
    let too_large = json!({"model": MODEL, "max_tokens": 2,
                           "messages": [{"role": "user", "content": "a".repeat(8192)}]});
    let (status, kind, _) = anthropic_error(post("/v1/messages", &too_large));
    assert_eq!((status, kind.as_str()), (413, "request_too_large"));

    // Other routes keep OpenAI's shape.
    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .json(&ok)
        .send();
    let body: Value = r.unwrap().json().unwrap();
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    assert!(body.get("type").is_none());

    // Every /v1/messages request is a generation request, counted once (with the chat request
    // above); count_tokens is not.
    for (status, count) in [
        ("200", 2.0),
        ("400", 8.0),
        ("401", 2.0),
        ("404", 1.0),
        ("413", 1.0),
    ] {
        assert_eq!(
            s.metric(&format!("epas_requests_total{{status=\"{status}\"}}")),
            Some(count),
            "status {status}"
        );
    }
    for (reason, count) in [("unauthorized", 2.0), ("invalid", 10.0)] {
        assert_eq!(
            s.metric(&format!(
                "epas_requests_rejected_total{{reason=\"{reason}\"}}"
            )),
            Some(count),
            "reason {reason}"
        );
    }
}
