"""The official `anthropic` Python client against a real `epas serve`: messages.create, the
streaming helper and raw stream events, count_tokens, stop sequences, the sharing ratio (field
and model alias), tool use (forced and `any` calls whose input validates against the tool's
`input_schema`, streamed, answered with tool results, `auto`) and errors as the client raises
them."""

import json

import pytest

from epas_testing import NAME, epas_server, require_module

anthropic = require_module("anthropic")
jsonschema = require_module("jsonschema")

KEY = "sk-ant-test"
SYSTEM = "You are brief."
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server():
    with epas_server("--allow-untrained-sharing", "--api-key", KEY) as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    # The client sends the key as `x-api-key` and its `anthropic-version` header.
    return anthropic.Anthropic(base_url=server, api_key=KEY, max_retries=0)


# Greedy answers. Newer clients no longer take sampling parameters as arguments (the server
# still does), so `temperature` goes in the body as an extra field.
GREEDY = {"temperature": 0}


def create(client, **extra):
    params = dict(model=NAME, max_tokens=12, system=SYSTEM, messages=MESSAGES, extra_body=GREEDY)
    params.update(extra)
    return client.messages.create(**params)


def test_messages_create_and_count_tokens(client):
    r = create(client, metadata={"user_id": "u-1"})
    assert r.type == "message" and r.role == "assistant" and r.model == NAME
    assert r.id.startswith("msg_")
    assert len(r.content) == 1 and r.content[0].type == "text" and r.content[0].text
    assert r.stop_reason in ("end_turn", "max_tokens") and r.stop_sequence is None
    assert 0 < r.usage.output_tokens <= 12
    assert (r.stop_reason == "max_tokens") == (r.usage.output_tokens == 12)
    counted = client.messages.count_tokens(model=NAME, system=SYSTEM, messages=MESSAGES)
    assert counted.input_tokens == r.usage.input_tokens
    assert r.model_extra["epas"]["sharing_layers"] == 0


def test_streaming_helper_and_raw_events_give_the_same_answer(client):
    whole = create(client)
    with client.messages.stream(
        model=NAME, max_tokens=12, system=SYSTEM, messages=MESSAGES, extra_body=GREEDY
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text
    assert final.content[0].text == text
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.input_tokens == whole.usage.input_tokens

    events = list(create(client, stream=True))
    types = [e.type for e in events]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(types[2:-3]) == {"content_block_delta"}
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == text
    assert events[-2].delta.stop_reason == whole.stop_reason


def test_stop_sequences_end_the_text_and_are_reported(client):
    text = create(client).content[0].text
    stop = text[3:].split()[0]
    r = create(client, stop_sequences=[stop])
    assert r.stop_reason == "stop_sequence" and r.stop_sequence == stop
    assert r.content[0].text == text[: text.index(stop)]


def test_sharing_ratio_by_field_and_by_model_alias(client):
    raw = client.messages.with_raw_response.create(
        model=NAME, max_tokens=4, messages=MESSAGES, extra_body={"sharing_ratio": 0.5}
    )
    assert raw.headers["x-epas-sharing-layers"] == "15"
    epas = raw.parse().model_extra["epas"]
    assert epas["sharing_layers"] == 15 and epas["sharing_ratio"] == 0.5
    r = client.messages.create(model=f"{NAME}@0.25", max_tokens=4, messages=MESSAGES)
    assert r.model_extra["epas"]["sharing_layers"] == 7


def test_errors_are_the_clients_exceptions(client, server):
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(
            model=NAME,
            max_tokens=4,
            messages=[{"role": "user", "content": [
                {"type": "image",
                 "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]}],
        )
    assert e.value.status_code == 400
    error = e.value.body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("messages[0].content[0].type:")

    with pytest.raises(anthropic.BadRequestError, match="tools\\[0\\].type") as e:
        client.messages.create(
            model=NAME, max_tokens=4, messages=MESSAGES,
            tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}],
        )
    assert "`web_search_20250305`" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError, match="tool_choice.name"):
        client.messages.create(
            model=NAME, max_tokens=4, messages=MESSAGES, tools=TOOLS,
            tool_choice={"type": "tool", "name": "missing"},
        )
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="claude-opus-4-1", max_tokens=4, messages=MESSAGES)
    wrong = anthropic.Anthropic(base_url=server, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(model=NAME, max_tokens=4, messages=MESSAGES)


WEATHER = {"name": "get_weather", "description": "The current weather in a city",
           "input_schema": {"type": "object",
                            "properties": {"city": {"type": "string", "minLength": 1,
                                                    "maxLength": 24},
                                           "unit": {"enum": ["celsius", "fahrenheit"]}},
                            "required": ["city", "unit"], "additionalProperties": False}}
ADD = {"name": "add", "description": "Add two integers",
       "input_schema": {"type": "object",
                        "properties": {"a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                                       "b": {"type": "integer", "minimum": -1000, "maximum": 1000}},
                        "required": ["a", "b"], "additionalProperties": False}}
NOW = {"name": "current_time", "description": "The time now",
       "input_schema": {"type": "object", "properties": {}, "additionalProperties": False}}
TOOLS = [WEATHER, ADD, NOW]
SCHEMAS = {t["name"]: t["input_schema"] for t in TOOLS}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def use_tools(client, tool_choice, messages=WEATHER_QUESTION, **extra):
    return client.messages.create(model=NAME, max_tokens=200, messages=messages, tools=TOOLS,
                                  tool_choice=tool_choice, **extra)


def tool_uses(message, names=None):
    """The tool_use blocks of `message`, each checked: a fresh `toolu_` id, an offered tool (one
    of `names` when given), an input valid under the tool's input_schema."""
    uses = [b for b in message.content if b.type == "tool_use"]
    assert uses, message
    assert len({u.id for u in uses}) == len(uses)
    for use in uses:
        assert use.id.startswith("toolu_"), use
        assert use.name in (names or SCHEMAS), use
        jsonschema.validate(use.input, SCHEMAS[use.name])
    return uses


def test_a_named_tool_gives_a_tool_use_whose_input_validates(client):
    for i, tool in enumerate(TOOLS):
        sampled = {"temperature": 0} if i % 2 else {"temperature": 0.9}
        r = use_tools(client, {"type": "tool", "name": tool["name"]}, extra_body=sampled)
        assert r.stop_reason == "tool_use" and r.stop_sequence is None, r
        assert [b.type for b in r.content] == ["tool_use"], r
        tool_uses(r, [tool["name"]])


def test_any_without_parallel_use_makes_exactly_one_call(client):
    r = use_tools(client, {"type": "any", "disable_parallel_tool_use": True}, extra_body=GREEDY)
    assert r.stop_reason == "tool_use"
    assert len(tool_uses(r)) == 1


def test_a_streamed_tool_use_is_the_whole_answers(client):
    choice = {"type": "tool", "name": "get_weather"}
    whole = use_tools(client, choice, extra_body=GREEDY)
    with client.messages.stream(model=NAME, max_tokens=200, messages=WEATHER_QUESTION,
                                tools=TOOLS, tool_choice=choice, extra_body=GREEDY) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    [streamed], [use] = tool_uses(final), tool_uses(whole)
    assert (streamed.name, streamed.input) == (use.name, use.input)
    partial = "".join(e.delta.partial_json for e in events
                      if e.type == "content_block_delta" and e.delta.type == "input_json_delta")
    assert json.loads(partial) == use.input


def test_tool_results_continue_the_conversation_and_auto_answers_either_way(client):
    first = use_tools(client, {"type": "tool", "name": "get_weather"}, extra_body=GREEDY)
    [use] = tool_uses(first)
    messages = WEATHER_QUESTION + [
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": [{"type": "text", "text": "18C, sunny"}]}]},
    ]
    counted = client.messages.count_tokens(model=NAME, messages=messages, tools=TOOLS)
    for _ in range(3):
        r = use_tools(client, {"type": "auto"}, messages, extra_body={"temperature": 1.0})
        assert r.usage.input_tokens == counted.input_tokens
        assert r.content, r
        if r.stop_reason == "tool_use":
            tool_uses(r)
        else:
            assert [b.type for b in r.content] == ["text"], r
    with pytest.raises(anthropic.BadRequestError, match="messages\\[1\\].content"):
        use_tools(client, {"type": "auto"}, WEATHER_QUESTION + [messages[1]])
