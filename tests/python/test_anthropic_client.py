"""The official `anthropic` Python client against a real `epas serve`: messages.create, the
streaming helper and raw stream events, count_tokens, stop sequences, the sharing ratio (field
and model alias) and errors as the client raises them."""

import pytest

from epas_testing import NAME, epas_server, require_module

anthropic = require_module("anthropic")

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

    with pytest.raises(anthropic.BadRequestError, match="tool use is not supported yet"):
        client.messages.create(
            model=NAME, max_tokens=4, messages=MESSAGES,
            tools=[{"name": "f", "input_schema": {"type": "object"}}],
        )
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="claude-opus-4-1", max_tokens=4, messages=MESSAGES)
    wrong = anthropic.Anthropic(base_url=server, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(model=NAME, max_tokens=4, messages=MESSAGES)
