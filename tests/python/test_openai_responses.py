"""The official `openai` client's Responses API (`client.responses`) against a real
`epas serve`: create, raw stream events and the streaming helper, `text.format` structured
outputs (a JSON Schema, and a pydantic model through `responses.parse`), the sharing ratio
extension and refusals."""

import json
from typing import Literal

import openai
import pydantic
import pytest

from epas_testing import NAME, epas_server, require_module

jsonschema = require_module("jsonschema")


@pytest.fixture(scope="module")
def client():
    with epas_server("--allow-untrained-sharing") as base:
        yield openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)


def test_create_cut_by_max_output_tokens(client):
    r = client.responses.create(
        model=NAME, instructions="You are brief.", input="Name three colours.",
        max_output_tokens=6, temperature=0,
    )
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output[0].type == "message" and r.output[0].role == "assistant"
    assert r.output_text
    assert r.usage.output_tokens == 6
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.model_extra["epas"]["sharing_layers"] == 0


def test_streamed_events_and_the_stream_helper(client):
    params = dict(model=NAME, input=[{"role": "user", "content": "Say hello."}],
                  max_output_tokens=200, temperature=0)
    whole = client.responses.create(**params)
    assert whole.status == "completed"

    events = list(client.responses.create(stream=True, **params))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == whole.output_text
    assert events[-1].response.output_text == whole.output_text
    assert events[-1].response.usage.output_tokens == whole.usage.output_tokens

    with client.responses.stream(**params) as stream:
        streamed = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert streamed == final.output_text == whole.output_text


SCHEMA = {
    "type": "object",
    "properties": {"colour": {"enum": ["red", "blue"]},
                   "count": {"type": "integer", "minimum": 1, "maximum": 9}},
    "required": ["colour", "count"],
    "additionalProperties": False,
}


def test_text_format_json_schema_output_validates(client):
    r = client.responses.create(
        model=NAME, input="Pick a colour and a count.", max_output_tokens=60, temperature=0.7,
        text={"format": {"type": "json_schema", "name": "pick", "schema": SCHEMA,
                         "strict": True}},
    )
    assert r.status == "completed"
    jsonschema.validate(json.loads(r.output_text), SCHEMA)

    # Any JSON object: the model may still be writing one when the tokens run out.
    r = client.responses.create(
        model=NAME, input="Reply with a JSON object.", max_output_tokens=60, temperature=0,
        text={"format": {"type": "json_object"}},
    )
    assert r.text.format.type == "json_object"
    assert r.output_text.startswith("{")
    if r.status == "completed":
        assert isinstance(json.loads(r.output_text), dict)
    else:
        assert r.usage.output_tokens == 60


class Pick(pydantic.BaseModel):
    colour: Literal["red", "blue"]
    count: int = pydantic.Field(ge=1, le=9)


def test_responses_parse_fills_a_pydantic_model(client):
    r = client.responses.parse(
        model=NAME, input="Pick a colour and a count.", text_format=Pick,
        max_output_tokens=60, temperature=0,
    )
    assert isinstance(r.output_parsed, Pick)


def test_sharing_ratio_extension_and_alias(client):
    r = client.responses.create(model=NAME, input="Hi", max_output_tokens=2,
                                extra_body={"sharing_ratio": 0.5})
    assert r.model_extra["epas"]["sharing_layers"] == 15
    r = client.responses.create(model=f"{NAME}@0.25", input="Hi", max_output_tokens=2)
    assert r.model_extra["epas"]["sharing_layers"] == 7


def test_refusals_name_the_field(client):
    for extra, param in [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"tools": [{"type": "function", "name": "f", "parameters": {}}]}, "tools"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
    ]:
        params = dict(model=NAME, input="Hi", max_output_tokens=2)
        params.update(extra)
        with pytest.raises(openai.BadRequestError) as e:
            client.responses.create(**params)
        assert e.value.param == param
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-5", input="Hi")
