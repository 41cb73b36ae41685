"""Tool calling through the official `openai` client against a real `epas serve` running
SmolLM2 (whose chat template knows no tools, so they are prompted in the Hermes convention):
`tool_choice` `required` and a named function give calls whose arguments validate against the
function's `parameters` (Python `jsonschema`), streamed deltas reassemble to the same calls, a
conversation with tool results is accepted and rendered, `auto` gives content or calls, and bad
tool fields are 400s naming the field."""

import concurrent.futures
import json

import openai
import pytest

from epas_testing import NAME, epas_server, http, require_module

jsonschema = require_module("jsonschema")


@pytest.fixture(scope="module")
def server():
    with epas_server("--allow-untrained-sharing") as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="none", max_retries=0)


def function(name, description, parameters=None):
    f = {"name": name, "description": description}
    if parameters is not None:
        f["parameters"] = parameters
    return {"type": "function", "function": f}


WEATHER = function("get_weather", "The current weather in a city", {
    "type": "object",
    "properties": {"city": {"type": "string", "minLength": 1, "maxLength": 24},
                   "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"], "additionalProperties": False})
ADD = function("add", "Add two integers", {
    "type": "object",
    "properties": {"a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                   "b": {"type": "integer", "minimum": -1000, "maximum": 1000}},
    "required": ["a", "b"], "additionalProperties": False})
BOOK = function("book_table", "Reserve a table at a restaurant", {
    "type": "object",
    "properties": {
        "restaurant": {"type": "string", "maxLength": 20},
        "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
        "guests": {"type": "integer", "minimum": 1, "maximum": 12},
        "requests": {"type": "array", "items": {"enum": ["window", "quiet", "vegan"]},
                     "maxItems": 3},
        "contact": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 16},
                                                     "phone": {"type": "string",
                                                               "pattern": r"^\d{3}-\d{4}$"}},
                    "required": ["name"], "additionalProperties": False}},
    "required": ["restaurant", "date", "guests"], "additionalProperties": False})
NOW = function("current_time", "The time now")
TOOLS = [WEATHER, ADD, BOOK, NOW]
SCHEMAS = {t["function"]["name"]: t["function"].get("parameters", {"type": "object"})
           for t in TOOLS}
QUESTIONS = ["What is the weather like in Paris today?", "What is 17 plus 25?",
             "Book a table for four at Luigi's next Friday.", "What time is it?"]


def ask(client, question, max_tokens=300, **kw):
    return client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": question}], tools=TOOLS,
        max_tokens=max_tokens, **kw)


def check_calls(calls, names=None):
    """Every call names an offered function (one of `names` when given), has a fresh id, and
    its arguments are JSON valid under the function's parameters."""
    assert calls, "no tool calls"
    assert len({c.id for c in calls}) == len(calls)
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_"), call
        assert call.function.name in (names or SCHEMAS), call
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


MAX_TOKENS = 300


def test_required_and_named_calls_have_arguments_valid_against_the_parameters(client):
    cases = []
    for i, question in enumerate(QUESTIONS):
        sampled = {"temperature": 0} if i % 2 else {"temperature": 0.9, "seed": i}
        cases.append((question, "required", None, sampled))
        for tool in TOOLS:
            name = tool["function"]["name"]
            cases.append((question, {"type": "function", "function": {"name": name}}, [name],
                          sampled))

    def run(case):
        question, choice, names, sampled = case
        return case, ask(client, question, tool_choice=choice, max_tokens=MAX_TOKENS, **sampled)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, cases))
    for (question, choice, names, _), response in results:
        answer = response.choices[0]
        assert answer.finish_reason == "tool_calls", (question, choice, answer)
        # A small model repeats parallel calls until max_tokens; the call cut off there is not
        # well formed and stays content (as in vLLM). A finished answer has no content.
        if response.usage.completion_tokens < MAX_TOKENS:
            assert answer.message.content is None, answer.message
        elif answer.message.content is not None:
            assert answer.message.content.lstrip().startswith("<tool_call>"), answer.message
        check_calls(answer.message.tool_calls, names)
        if names:
            assert len(answer.message.tool_calls) == 1, answer.message.tool_calls


def test_without_parallel_calls_required_makes_exactly_one_call_in_each_choice(client):
    r = ask(client, QUESTIONS[0], tool_choice="required", parallel_tool_calls=False, n=3,
            temperature=1.0, seed=11)
    assert len(r.choices) == 3
    for choice in r.choices:
        assert choice.finish_reason == "tool_calls"
        assert len(choice.message.tool_calls) == 1
        check_calls(choice.message.tool_calls)


def reassemble(stream):
    """(content, calls as (id, name, arguments), finish_reason) of a streamed choice 0."""
    content, calls, finish = "", {}, None
    for chunk in stream:
        for c in chunk.choices:
            content += c.delta.content or ""
            for d in c.delta.tool_calls or []:
                call = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += d.id or ""
                call["name"] += d.function.name or ""
                call["arguments"] += d.function.arguments or ""
            finish = c.finish_reason or finish
    ordered = [calls[i] for i in sorted(calls)]
    assert sorted(calls) == list(range(len(calls)))
    return content, [(c["id"], c["name"], c["arguments"]) for c in ordered], finish


@pytest.mark.parametrize("choice", ["required", {"type": "function",
                                                 "function": {"name": "book_table"}}])
def test_streamed_deltas_reassemble_to_the_same_calls(client, choice):
    whole = ask(client, QUESTIONS[2], tool_choice=choice, temperature=0).choices[0]
    content, calls, finish = reassemble(
        ask(client, QUESTIONS[2], tool_choice=choice, temperature=0, stream=True))
    assert finish == "tool_calls"
    assert "<tool_call" not in content and content == (whole.message.content or "")
    assert [(n, a) for _, n, a in calls] == [
        (c.function.name, c.function.arguments) for c in whole.message.tool_calls]
    assert all(i.startswith("call_") for i, _, _ in calls)


def test_a_conversation_with_tool_results_is_accepted_and_rendered(client, server):
    first = ask(client, QUESTIONS[0], tool_choice="required", temperature=0).choices[0].message
    messages = [{"role": "user", "content": QUESTIONS[0]},
                {"role": "assistant", "content": None,
                 "tool_calls": [c.model_dump() for c in first.tool_calls]}]
    messages += [{"role": "tool", "tool_call_id": c.id, "content": "18 degrees and sunny"}
                 for c in first.tool_calls]
    answer = client.chat.completions.create(model=NAME, messages=messages, tools=TOOLS,
                                            max_tokens=40, temperature=0).choices[0]
    assert answer.finish_reason in ("stop", "length", "tool_calls")
    # The prompt holds the call as written and the result.
    status, body = http("POST", server + "/tokenize", {"messages": messages})
    assert status == 200, body
    status, text = http("POST", server + "/detokenize", {"tokens": body["tokens"]})
    call = first.tool_calls[0]
    arguments = json.dumps(json.loads(call.function.arguments), ensure_ascii=False)
    assert (f'<tool_call>\n{{"name": "{call.function.name}", "arguments": {arguments}}}\n'
            '</tool_call>') in text["prompt"], text
    assert "<tool_response>\n18 degrees and sunny\n</tool_response>" in text["prompt"], text
    # Without tools, a conversation with calls is still accepted.
    assert client.chat.completions.create(model=NAME, messages=messages, max_tokens=4).choices


def test_auto_gives_content_or_valid_calls_and_none_gives_content(client):
    for seed, question in enumerate(QUESTIONS):
        answer = ask(client, question, tool_choice="auto", temperature=0.7, seed=seed,
                     max_tokens=120).choices[0]
        if answer.message.tool_calls:
            assert answer.finish_reason == "tool_calls"
            check_calls(answer.message.tool_calls)
        else:
            assert answer.finish_reason in ("stop", "length")
            assert isinstance(answer.message.content, str)
        answer = ask(client, question, tool_choice="none", max_tokens=30, seed=seed).choices[0]
        assert answer.message.tool_calls is None and isinstance(answer.message.content, str)
        assert answer.finish_reason in ("stop", "length")


def test_auto_reads_the_calls_the_model_writes_and_keeps_malformed_ones_as_content(client):
    # A one-option guided choice makes the model write exactly this text; `auto` reads it.
    written = ('Sure.\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>\n'
               '<tool_call>\n{"name": "current_time"}\n</tool_call>')
    answer = ask(client, QUESTIONS[1], extra_body={"guided_choice": [written]}).choices[0]
    assert answer.finish_reason == "tool_calls"
    assert answer.message.content == "Sure."
    assert [(c.function.name, json.loads(c.function.arguments))
            for c in answer.message.tool_calls] == [("add", {"a": 2, "b": 3}),
                                                    ("current_time", {})]
    check_calls(answer.message.tool_calls)
    content, calls, finish = reassemble(
        ask(client, QUESTIONS[1], stream=True, extra_body={"guided_choice": [written]}))
    assert (content, finish) == ("Sure.", "tool_calls")
    assert [(n, a) for _, n, a in calls] == [
        (c.function.name, c.function.arguments) for c in answer.message.tool_calls]
    # Without parallel calls the second stays content; an unknown function is not a call.
    answer = ask(client, QUESTIONS[1], parallel_tool_calls=False,
                 extra_body={"guided_choice": [written]}).choices[0]
    assert [c.function.name for c in answer.message.tool_calls] == ["add"]
    # The content is the text around the read call, as written.
    assert answer.message.content == 'Sure.\n\n<tool_call>\n{"name": "current_time"}\n</tool_call>'
    unknown = '<tool_call>\n{"name": "launch", "arguments": {}}\n</tool_call>'
    for stream in (False, True):
        r = ask(client, QUESTIONS[1], stream=stream, extra_body={"guided_choice": [unknown]})
        content, calls, finish = reassemble(r) if stream else (
            r.choices[0].message.content, r.choices[0].message.tool_calls,
            r.choices[0].finish_reason)
        assert (content, calls or [], finish) == (unknown, [], "stop")


@pytest.mark.parametrize("extra, field", [
    ({"tools": [WEATHER, function("two words", "x")]}, "tools[1].function.name"),
    ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
    ({"tools": [function("f", "x", {"type": "array"})]}, "tools[0].function.parameters"),
    ({"tools": [{"type": "custom", "custom": {"name": "f"}}]}, "tools[0].type"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "add"}}},
     "tool_choice.function.name"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}},
     "response_format"),
    ({"tools": [function("f", "x", {"type": "object", "properties": {"a": {"type": "nope"}}})],
      "tool_choice": "required"}, "tools"),
])
def test_bad_tool_fields_are_400s_naming_the_field(client, extra, field):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=NAME, max_tokens=4,
                                       messages=[{"role": "user", "content": "hi"}],
                                       extra_body=extra)
    assert e.value.body["param"] == field, e.value.body
    assert client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=1).choices
