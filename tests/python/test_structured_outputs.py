"""Structured outputs through the official `openai` client against a real `epas serve` running
SmolLM2: every output of a generated set of JSON Schemas parses and validates (Python
`jsonschema`), regex, choice and grammar outputs match, streaming and `n` keep to the
constraint, and constraints that do not compile are 400s naming the field."""

import concurrent.futures
import json
import random
import re

import openai
import pytest

from epas_testing import NAME, epas_server, require_module

jsonschema = require_module("jsonschema")


@pytest.fixture(scope="module")
def client():
    with epas_server("--allow-untrained-sharing") as base:
        yield openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)


def generated_schemas(count, seed=2026):
    """`count` JSON Schemas with nested objects, bounded arrays, enums, required and optional
    fields, numbers with ranges and string patterns. Every string and array is bounded so that
    a finished output fits the token budget."""
    rng = random.Random(seed)
    words = ["name", "id", "city", "score", "tags", "active", "kind", "size", "owner", "notes"]

    def leaf(depth):
        pick = rng.choice(["int", "num", "str", "pattern", "enum", "bool", "array", "object"])
        if depth >= 2 and pick in ("array", "object"):
            pick = "int"
        if pick == "int":
            low = rng.randint(-50, 50)
            return {"type": "integer", "minimum": low, "maximum": low + rng.randint(1, 500)}
        if pick == "num":
            return {"type": "number", "minimum": 0, "maximum": rng.choice([1, 10, 1000])}
        if pick == "str":
            return {"type": "string", "minLength": 1, "maxLength": rng.randint(3, 24)}
        if pick == "pattern":
            return {"type": "string", "pattern": rng.choice(
                [r"^[A-Z]{2}-[0-9]{3}$", r"^[a-z]+@[a-z]+\.com$", r"^\d{4}-\d{2}-\d{2}$"])}
        if pick == "enum":
            return {"enum": rng.sample(["red", "green", "blue", "small", "large", 7, None], 3)}
        if pick == "bool":
            return {"type": "boolean"}
        if pick == "array":
            low = rng.randint(0, 2)
            return {"type": "array", "items": leaf(depth + 1), "minItems": low,
                    "maxItems": low + rng.randint(1, 3)}
        return obj(depth + 1)

    def obj(depth):
        keys = rng.sample(words, rng.randint(1, 4))
        props = {k: leaf(depth) for k in keys}
        required = [k for k in keys if rng.random() < 0.7]
        schema = {"type": "object", "properties": props, "additionalProperties": False}
        if required:
            schema["required"] = required
        return schema

    return [obj(0) for _ in range(count)]


def chat(client, content, **kw):
    return client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": content}], **kw)


def test_generated_schemas_give_valid_json(client):
    schemas = generated_schemas(12)

    def ask(i_schema):
        i, schema = i_schema
        sampled = {"temperature": 0.8, "seed": i} if i % 2 else {"temperature": 0}
        r = chat(client, "Describe an example record as JSON.", max_tokens=400,
                 response_format={"type": "json_schema",
                                  "json_schema": {"name": f"record_{i}", "schema": schema,
                                                  "strict": True}},
                 extra_body={"sharing_ratio": [0.0, 0.25][i % 2]}, **sampled)
        return schema, r.choices[0]

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(ask, enumerate(schemas)))
    for schema, choice in results:
        assert choice.finish_reason == "stop", (schema, choice.message.content)
        value = json.loads(choice.message.content)
        jsonschema.validate(value, schema)


def test_json_object_streamed_with_n(client):
    stream = chat(client, "Give me a JSON object about a cat.", max_tokens=200, n=2,
                  temperature=0.9, seed=3, stream=True,
                  response_format={"type": "json_object"})
    texts, finish = ["", ""], [None, None]
    for chunk in stream:
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            finish[c.index] = c.finish_reason or finish[c.index]
    for text, reason in zip(texts, finish):
        if reason == "stop":
            assert isinstance(json.loads(text), dict), text
        else:
            assert reason == "length" and text.lstrip().startswith("{"), text
    assert "stop" in finish, (texts, finish)


def test_regex_choice_and_grammar(client):
    pattern = r"(yes|no), because [a-z ]{5,40}\."
    r = client.completions.create(model=NAME, prompt="Is the sky blue? Answer:", max_tokens=40,
                                  extra_body={"structured_outputs": {"regex": pattern}})
    assert re.fullmatch(pattern, r.choices[0].text), r.choices[0].text
    r = client.completions.create(model=NAME, prompt="Phone:", max_tokens=20,
                                  extra_body={"guided_regex": r"\d{3}-\d{4}"}, logprobs=2)
    assert re.fullmatch(r"\d{3}-\d{4}", r.choices[0].text), r.choices[0].text
    assert len(r.choices[0].logprobs.tokens) == r.usage.completion_tokens
    options = ["Paris", "London", "Rome"]
    r = chat(client, "Which city is the capital of France?", max_tokens=10,
             extra_body={"guided_choice": options})
    assert r.choices[0].message.content in options
    grammar = 'start: "SELECT " COL " FROM " TABLE ";"\nCOL: /[a-z_]{1,12}/\nTABLE: "users" | "orders"'
    r = client.completions.create(model=NAME, prompt="SQL to read user names:\n", max_tokens=30,
                                  extra_body={"structured_outputs": {"grammar": grammar}})
    assert re.fullmatch(r"SELECT [a-z_]{1,12} FROM (users|orders);", r.choices[0].text), \
        r.choices[0].text


def test_stop_strings_and_max_tokens_still_apply(client):
    r = chat(client, "List numbers.", max_tokens=8,
             response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": {
                 "type": "array", "items": {"type": "integer"}}}})
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8
    r = client.completions.create(model=NAME, prompt="Count:", max_tokens=30, stop=["3"],
                                  extra_body={"guided_regex": r"1, 2, 3, 4, 5"})
    assert r.choices[0].text == "1, 2, " and r.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("extra, field", [
    ({"guided_regex": "(unclosed"}, "guided_regex"),
    ({"structured_outputs": {"json": {"type": "object", "properties": {"a": {"type": "nope"}}}}},
     "structured_outputs.json"),
    ({"structured_outputs": {"grammar": "start: undefined_rule"}}, "structured_outputs.grammar"),
    ({"guided_regex": "a", "guided_choice": ["b"]}, "guided_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format.json_schema.schema"),
])
def test_unusable_constraints_are_400_naming_the_field(client, extra, field):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=NAME, prompt="hi", max_tokens=4, extra_body=extra)
    assert e.value.body["param"] == field, e.value.body
    # The server still answers.
    assert client.completions.create(model=NAME, prompt="hi", max_tokens=1).choices


def test_a_too_complex_constraint_is_refused_by_a_limit(client):
    # Its lexer outgrows llguidance's limits once generation starts: a 400 of its own code, in
    # well under a second, not a 500 or the server's memory.
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=NAME, prompt="hi", max_tokens=4,
                                  extra_body={"guided_regex": "x{1,5}" * 4000}, timeout=30)
    assert e.value.body["code"] == "constraint_failed", e.value.body
    assert "too many" in e.value.body["message"], e.value.body
    assert len(e.value.body["message"]) < 500
    assert client.completions.create(model=NAME, prompt="hi", max_tokens=1).choices
