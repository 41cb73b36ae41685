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
        ({"tools": [{"type": "web_search_preview"}]}, "tools[0].type"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
    ]:
        params = dict(model=NAME, input="Hi", max_output_tokens=2)
        params.update(extra)
        with pytest.raises(openai.BadRequestError) as e:
            client.responses.create(**params)
        assert e.value.param == param
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-5", input="Hi")


WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object",
                          "properties": {"city": {"type": "string", "maxLength": 24},
                                         "unit": {"enum": ["celsius", "fahrenheit"]}},
                          "required": ["city", "unit"], "additionalProperties": False}}
ADD = {"type": "function", "name": "add", "description": "Add two integers",
       "parameters": {"type": "object",
                      "properties": {"a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                                     "b": {"type": "integer", "minimum": -1000, "maximum": 1000}},
                      "required": ["a", "b"], "additionalProperties": False}}
PARAMETERS = {t["name"]: t["parameters"] for t in (WEATHER, ADD)}


def calls_of(response):
    """(name, arguments) of each function_call item, checked against its parameters."""
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls, response.output
    for call in calls:
        assert call.call_id.startswith("call_") and call.id.startswith("fc_"), call
        assert call.status == "completed"
        jsonschema.validate(json.loads(call.arguments), PARAMETERS[call.name])
    return [(c.name, json.loads(c.arguments)) for c in calls]


@pytest.mark.parametrize("choice, names", [
    ("required", {"get_weather", "add"}),
    ({"type": "function", "name": "add"}, {"add"}),
])
def test_forced_function_calls_are_output_items_valid_against_the_parameters(client, choice,
                                                                             names):
    params = dict(model=NAME, input="What is 17 plus 25, and the weather in Oslo?",
                  tools=[WEATHER, ADD], tool_choice=choice, parallel_tool_calls=False,
                  max_output_tokens=120, temperature=0)
    whole = client.responses.create(**params)
    assert whole.status == "completed", whole
    calls = calls_of(whole)
    assert len(calls) == 1 and calls[0][0] in names
    assert whole.tool_choice == choice or whole.tool_choice.name == "add"
    assert [t.name for t in whole.tools] == ["get_weather", "add"]

    events = list(client.responses.create(stream=True, **params))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    deltas = "".join(e.delta for e in events
                     if e.type == "response.function_call_arguments.delta")
    assert [(e.name, json.loads(e.arguments)) for e in done] == calls
    assert json.loads(deltas) == calls[0][1]
    final = events[-1]
    assert final.type == "response.completed"
    assert calls_of(final.response) == calls
    added = [e.item for e in events if e.type == "response.output_item.added"]
    assert [i.type for i in added] == [i.type for i in final.response.output]


def test_a_conversation_with_function_call_outputs_continues(client):
    first = client.responses.create(model=NAME, input=[{"role": "user",
                                                        "content": "What is 17 plus 25?"}],
                                    tools=[ADD], tool_choice="required",
                                    parallel_tool_calls=False, max_output_tokens=80,
                                    temperature=0)
    call = next(item for item in first.output if item.type == "function_call")
    history = [{"role": "user", "content": "What is 17 plus 25?"}]
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "42"})
    second = client.responses.create(model=NAME, input=history, tools=[ADD],
                                     max_output_tokens=40, temperature=0)
    assert second.status in ("completed", "incomplete")
    assert second.output and second.usage.input_tokens > first.usage.input_tokens

    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=NAME, input=history[:-1] + [
            {"role": "user", "content": "and?"}], max_output_tokens=4)
    assert e.value.param.endswith(".call_id")
