"""The mock LLM providers (tests/mock-provider) against the OFFICIAL SDKs (`openai`, `anthropic`).

Every answer the end-to-end suite and the demo rely on is parsed here by the SDK that real
clients use, so a shape the real APIs would not send fails here first. Token numbers follow the
mock's documented rule: prompt = whitespace-separated words of every message content (and the
Anthropic `system`) + 3 per message; completions/embeddings = words of each prompt/input;
completion = `x-mock-completion-tokens`, else min(max_tokens, 16).
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import struct
import subprocess
import time

import anthropic
import openai
import pytest
import requests

from conftest import MOCK_PROVIDER_BIN

OPENAI_KEY = "sk-test-openai-0123456789abcd"
ANTHROPIC_KEY = "sk-ant-test-0123456789wxyz"
AZURE_KEY = "azure-test-key-0123456789"
AZURE_API_VERSION = "2024-10-21"


def toks(n: int) -> str:
    return " ".join(f"tok{i}" for i in range(n))


@pytest.fixture
def mock(mock_provider):
    return mock_provider(name="openai-a", openai_key=OPENAI_KEY, anthropic_key=ANTHROPIC_KEY, azure_key=AZURE_KEY)


def oai(mock, **kw) -> openai.OpenAI:
    kw.setdefault("api_key", OPENAI_KEY)
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 10)
    return openai.OpenAI(base_url=mock.url + "/v1", **kw)


def azure(mock, **kw) -> openai.AzureOpenAI:
    kw.setdefault("api_key", AZURE_KEY)
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 10)
    return openai.AzureOpenAI(azure_endpoint=mock.url, api_version=AZURE_API_VERSION, **kw)


def claude(mock, **kw) -> anthropic.Anthropic:
    kw.setdefault("api_key", ANTHROPIC_KEY)
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 10)
    return anthropic.Anthropic(base_url=mock.url, **kw)


CHAT = [
    {"role": "system", "content": "You are terse."},         # 3 words + 3
    {"role": "user", "content": "Say hello to the world"},   # 5 words + 3
]
CHAT_PROMPT_TOKENS = 14


# --------------------------------------------------------------------------------------------
# process contract


def test_cli_prints_exactly_one_line_and_stops_on_sigterm():
    if not MOCK_PROVIDER_BIN.exists():
        pytest.fail(f"mock-provider binary not found at {MOCK_PROVIDER_BIN}: run `make build`")
    p = subprocess.Popen([str(MOCK_PROVIDER_BIN), "--listen", "127.0.0.1:0", "--name", "cli"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.strip().rsplit(":", 1)[1])
        assert port > 0
        r = requests.get(f"http://127.0.0.1:{port}/_mock/health", timeout=5)
        assert r.json() == {"status": "ok", "name": "cli"}
        assert r.headers["x-mock-provider"] == "cli"
    finally:
        p.send_signal(signal.SIGTERM)
        rest, _ = p.communicate(timeout=10)
    assert rest == "", f"stdout must hold only the listening line, got more: {rest!r}"
    assert p.returncode == 0


# --------------------------------------------------------------------------------------------
# OpenAI


def test_openai_chat_non_stream(mock):
    client = oai(mock)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT, max_tokens=5)
    assert raw.headers["x-mock-provider"] == "openai-a"
    c = raw.parse()
    assert c.object == "chat.completion"
    assert c.model == "gpt-4o-mini"
    assert c.id == "chatcmpl-openai-a-1"
    assert c.system_fingerprint == "fp_openai-a"
    assert len(c.choices) == 1
    assert c.choices[0].message.role == "assistant"
    assert c.choices[0].message.content == toks(5)
    assert c.choices[0].finish_reason == "length"
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == (CHAT_PROMPT_TOKENS, 5, 19)

    # No limit: 16 tokens, "stop"; the header forces N; max_completion_tokens counts too.
    c = client.chat.completions.create(model="gpt-4o", messages=CHAT)
    assert (c.choices[0].message.content, c.choices[0].finish_reason) == (toks(16), "stop")
    assert c.usage.completion_tokens == 16
    c = client.chat.completions.create(model="gpt-4o", messages=CHAT, max_tokens=100,
                                       extra_headers={"x-mock-completion-tokens": "3"})
    assert (c.choices[0].message.content, c.choices[0].finish_reason, c.usage.total_tokens) == (toks(3), "stop", 17)
    c = client.chat.completions.create(model="gpt-4o", messages=CHAT, max_completion_tokens=2)
    assert (c.choices[0].message.content, c.choices[0].finish_reason) == (toks(2), "length")
    # Content parts count their text.
    c = client.chat.completions.create(model="gpt-4o", max_tokens=1, messages=[
        {"role": "user", "content": [{"type": "text", "text": "one two"}, {"type": "text", "text": "three"}]}])
    assert c.usage.prompt_tokens == 3 + 3


def test_openai_chat_stream_without_usage(mock):
    chunks = list(oai(mock).chat.completions.create(model="gpt-4o-mini", messages=CHAT, max_tokens=4, stream=True))
    assert len(chunks) == 1 + 4 + 1
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert all(c.model == "gpt-4o-mini" and c.usage is None for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == toks(4)
    assert [c.choices[0].finish_reason for c in chunks] == [None] * 5 + ["length"]


def test_openai_chat_stream_with_usage(mock):
    client = oai(mock)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=CHAT, stream=True,
                                                 stream_options={"include_usage": True},
                                                 extra_headers={"x-mock-completion-tokens": "3"}))
    assert len(chunks) == 1 + 3 + 1 + 1
    *body, last = chunks
    assert all(c.usage is None for c in body)
    assert body[-1].choices[0].finish_reason == "stop"
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (CHAT_PROMPT_TOKENS, 3, 17)

    # The SDK's streaming helper accumulates the same answer (it refuses "length" answers).
    with client.chat.completions.stream(model="gpt-4o-mini", messages=CHAT, max_tokens=100,
                                        stream_options={"include_usage": True},
                                        extra_headers={"x-mock-completion-tokens": "6"}) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.content == toks(6)
    assert final.choices[0].finish_reason == "stop"
    assert final.usage.completion_tokens == 6 and final.usage.prompt_tokens == CHAT_PROMPT_TOKENS


def test_openai_completions(mock):
    client = oai(mock)
    c = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once upon a time")
    assert c.object == "text_completion" and c.model == "gpt-3.5-turbo-instruct"
    assert (c.choices[0].text, c.choices[0].finish_reason) == (toks(16), "stop")
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == (4, 16, 20)

    chunks = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt=["a b", "c"], max_tokens=3,
                                            stream=True, stream_options={"include_usage": True}))
    *body, last = chunks
    assert "".join(ch.choices[0].text for ch in body) == toks(3)
    assert body[-1].choices[0].finish_reason == "length"
    assert last.choices == [] and (last.usage.prompt_tokens, last.usage.completion_tokens) == (3, 3)


def test_openai_embeddings(mock):
    client = oai(mock)
    inputs = ["hello embedding world", "x"]
    default = client.embeddings.create(model="text-embedding-3-small", input=inputs)  # SDK asks for base64
    floats = client.embeddings.create(model="text-embedding-3-small", input=inputs, encoding_format="float")
    assert [d.index for d in default.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in default.data)
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert default.data[0].embedding != default.data[1].embedding
    assert (default.usage.prompt_tokens, default.usage.total_tokens) == (4, 4)
    assert default.model == "text-embedding-3-small"
    reqs = [r for r in mock.requests() if r["path"] == "/v1/embeddings"]
    assert [r["body"].get("encoding_format") for r in reqs] == ["base64", "float"]
    # Deterministic across calls.
    again = client.embeddings.create(model="text-embedding-3-small", input="x", encoding_format="float")
    assert again.data[0].embedding == floats.data[1].embedding


def test_openai_models(mock):
    ids = [m.id for m in oai(mock).models.list()]
    assert "gpt-4o-mini" in ids and "text-embedding-3-small" in ids


def test_openai_auth_failures(mock):
    with pytest.raises(openai.AuthenticationError) as e:
        oai(mock, api_key="sk-wrong-key-0000abcd").chat.completions.create(model="gpt-4o", messages=CHAT)
    assert e.value.status_code == 401
    err = e.value.response.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] is None and err["code"] == "invalid_api_key"
    assert err["message"].startswith("Incorrect API key provided: sk-...abcd. ")
    assert "wrong-key" not in err["message"]

    r = requests.post(mock.url + "/v1/chat/completions", json={"model": "m", "messages": CHAT}, timeout=5)
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["message"].startswith("You didn't provide an API key.") and err["code"] is None
    assert err["type"] == "invalid_request_error" and err["param"] is None


def test_openai_validation_errors(mock):
    h = {"authorization": f"Bearer {OPENAI_KEY}", "content-type": "application/json"}
    url = mock.url + "/v1/chat/completions"

    r = requests.post(url, data=b"{not json", headers=h, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("We could not parse the JSON body")
    r = requests.post(url, json={"messages": CHAT}, headers=h, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["message"] == "you must provide a model parameter"
    r = requests.post(url, json={"model": "m"}, headers=h, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_required_parameter"
    assert r.json()["error"]["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        oai(mock).chat.completions.create(model="m", messages=[])
    assert e.value.code == "empty_array"
    r = requests.get(mock.url + "/v1/nope", headers=h, timeout=5)
    assert r.status_code == 404 and r.json()["error"]["message"] == "Invalid URL (GET /v1/nope)"


# --------------------------------------------------------------------------------------------
# Azure OpenAI


def test_azure_openai(mock):
    client = azure(mock)
    c = client.chat.completions.create(model="gpt4o-east", messages=CHAT, max_tokens=2)
    assert c.model == "gpt4o-east"
    assert (c.choices[0].message.content, c.usage.prompt_tokens, c.usage.completion_tokens) == (toks(2), 14, 2)

    chunks = list(client.chat.completions.create(model="gpt4o-east", messages=CHAT, max_tokens=2, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == toks(2)
    assert chunks[-1].usage.total_tokens == 16

    e = client.embeddings.create(model="emb-east", input="a b c")
    assert e.model == "emb-east" and len(e.data[0].embedding) == 8 and e.usage.prompt_tokens == 3

    c = client.completions.create(model="instruct-east", prompt="hi", max_tokens=1)
    assert c.choices[0].text == "tok0"

    reqs = mock.requests()
    assert [r["path"] for r in reqs] == [
        "/openai/deployments/gpt4o-east/chat/completions",
        "/openai/deployments/gpt4o-east/chat/completions",
        "/openai/deployments/emb-east/embeddings",
        "/openai/deployments/instruct-east/completions",
    ]
    assert all(r["query"] == f"api-version={AZURE_API_VERSION}" for r in reqs)
    assert all(r["headers"]["api-key"] == AZURE_KEY for r in reqs)

    with pytest.raises(openai.AuthenticationError) as err:
        azure(mock, api_key="wrong").chat.completions.create(model="gpt4o-east", messages=CHAT)
    assert err.value.response.json()["error"]["code"] == "401"

    r = requests.post(mock.url + "/openai/deployments/gpt4o-east/chat/completions",
                      headers={"api-key": AZURE_KEY}, json={"messages": CHAT}, timeout=5)
    assert r.status_code == 404 and r.json() == {"error": {"code": "404", "message": "Resource not found"}}


# --------------------------------------------------------------------------------------------
# Anthropic

MESSAGES = [{"role": "user", "content": "Hello there friend"}]  # 3 words + 3


def test_anthropic_messages_non_stream(mock):
    client = claude(mock)
    raw = client.messages.with_raw_response.create(model="claude-test-model", max_tokens=4, system="Be brief.",
                                                   messages=MESSAGES)
    assert raw.headers["x-mock-provider"] == "openai-a"
    m = raw.parse()
    assert m.type == "message" and m.role == "assistant" and m.model == "claude-test-model"
    assert m.id == "msg_openai-a_1"
    assert [b.type for b in m.content] == ["text"] and m.content[0].text == toks(4)
    assert m.stop_reason == "max_tokens"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (2 + 6, 4)

    m = client.messages.create(model="claude-test-model", max_tokens=100, messages=[
        {"role": "user", "content": [{"type": "text", "text": "one two three four"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "go"}])
    assert (m.stop_reason, m.usage.input_tokens, m.usage.output_tokens) == ("end_turn", 4 + 1 + 1 + 9, 16)

    assert client.messages.count_tokens(model="claude-test-model", system="Be brief.",
                                        messages=MESSAGES).input_tokens == 8


def test_anthropic_messages_stream_helper(mock):
    with claude(mock).messages.stream(model="claude-test-model", max_tokens=100, system="Be brief.",
                                      messages=MESSAGES) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == toks(16)
    assert final.content[0].text == toks(16)
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (8, 16)


def test_anthropic_messages_create_stream(mock):
    events = list(claude(mock).messages.create(model="claude-test-fast", max_tokens=3, messages=MESSAGES,
                                               stream=True))
    # (the SDK drops the `ping` event, which the raw stream below shows)
    assert [e.type for e in events] == (["message_start", "content_block_start"] + ["content_block_delta"] * 3
                                        + ["content_block_stop", "message_delta", "message_stop"])
    start = events[0].message
    assert (start.model, start.usage.input_tokens, start.usage.output_tokens) == ("claude-test-fast", 6, 1)
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == toks(3)
    delta = events[-2]
    assert (delta.delta.stop_reason, delta.usage.output_tokens) == ("max_tokens", 3)

    r = requests.post(mock.url + "/v1/messages", stream=True, timeout=5,
                      headers={"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"},
                      json={"model": "c", "max_tokens": 1, "stream": True, "messages": MESSAGES})
    assert r.headers["content-type"].startswith("text/event-stream")
    names = [ln[len("event: "):] for ln in r.iter_lines(decode_unicode=True) if ln.startswith("event: ")]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]


def test_anthropic_errors(mock):
    with pytest.raises(anthropic.AuthenticationError) as e:
        claude(mock, api_key="sk-ant-wrong").messages.create(model="c", max_tokens=5, messages=MESSAGES)
    assert e.value.status_code == 401
    assert e.value.body == {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}

    h = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
    url = mock.url + "/v1/messages"
    r = requests.post(url, headers=h, json={"model": "c", "messages": MESSAGES}, timeout=5)
    assert r.status_code == 400
    assert r.json() == {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}}
    r = requests.post(url, headers=h, json={"model": "c", "max_tokens": 5}, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["message"] == "messages: Field required"
    r = requests.post(url, headers={"x-api-key": ANTHROPIC_KEY}, json={"model": "c", "max_tokens": 5, "messages": MESSAGES},
                      timeout=5)
    assert r.status_code == 400 and r.json()["error"]["message"] == "anthropic-version: header is required"
    r = requests.post(url, headers={"anthropic-version": "2023-06-01"}, json={}, timeout=5)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


# --------------------------------------------------------------------------------------------
# fault headers


def test_injected_statuses_raise_the_sdk_errors(mock):
    with pytest.raises(openai.RateLimitError) as e:
        oai(mock).chat.completions.create(model="gpt-4o", messages=CHAT,
                                          extra_headers={"x-mock-status": "429", "x-mock-retry-after": "7"})
    assert e.value.status_code == 429 and e.value.code == "rate_limit_exceeded"
    assert e.value.response.headers["retry-after"] == "7"
    assert e.value.response.headers["x-mock-provider"] == "openai-a"

    with pytest.raises(openai.InternalServerError) as e:
        oai(mock).chat.completions.create(model="gpt-4o", messages=CHAT, extra_headers={"x-mock-status": "500"})
    assert e.value.status_code == 500 and e.value.type == "server_error"
    with pytest.raises(openai.InternalServerError) as e:
        oai(mock).embeddings.create(model="e", input="x", extra_headers={"x-mock-status": "503"})
    assert e.value.status_code == 503

    with pytest.raises(anthropic.RateLimitError) as e:
        claude(mock).messages.create(model="c", max_tokens=5, messages=MESSAGES,
                                     extra_headers={"x-mock-status": "429", "x-mock-retry-after": "2"})
    assert e.value.response.headers["retry-after"] == "2"
    assert e.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.InternalServerError) as e:
        claude(mock).messages.create(model="c", max_tokens=5, messages=MESSAGES, extra_headers={"x-mock-status": "529"})
    assert e.value.status_code == 529 and e.value.body["error"]["type"] == "overloaded_error"

    with pytest.raises(openai.InternalServerError):
        azure(mock).chat.completions.create(model="d", messages=CHAT, extra_headers={"x-mock-status": "503"})


def test_injected_reset_raises_connection_error(mock):
    with pytest.raises(openai.APIConnectionError):
        oai(mock).chat.completions.create(model="gpt-4o", messages=CHAT, extra_headers={"x-mock-reset": "1"})
    with pytest.raises(anthropic.APIConnectionError):
        claude(mock).messages.create(model="c", max_tokens=5, messages=MESSAGES, extra_headers={"x-mock-reset": "1"})
    # The raw socket sees no response at all.
    with socket.create_connection(("127.0.0.1", mock.port), timeout=5) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-mock-reset: 1\r\ncontent-length: 2\r\n\r\n{}")
        try:
            data = s.recv(1024)
        except ConnectionResetError:
            data = b""
    assert data == b""
    # and the server keeps serving
    assert oai(mock).chat.completions.create(model="gpt-4o", messages=CHAT, max_tokens=1).choices[0].message.content == "tok0"


def test_latency(mock):
    t0 = time.monotonic()
    oai(mock).chat.completions.create(model="gpt-4o", messages=CHAT, extra_headers={"x-mock-latency-ms": "400"})
    assert time.monotonic() - t0 >= 0.4
    with pytest.raises(openai.APITimeoutError):
        oai(mock, timeout=0.2).chat.completions.create(model="gpt-4o", messages=CHAT,
                                                       extra_headers={"x-mock-latency-ms": "1500"})


def test_stream_chunk_delay_flushes_each_event(mock):
    stream = oai(mock).chat.completions.create(model="gpt-4o", messages=CHAT, max_tokens=4, stream=True,
                                               extra_headers={"x-mock-stream-chunk-delay-ms": "150"})
    arrivals = []
    for chunk in stream:
        arrivals.append((time.monotonic(), chunk.choices[0].delta.content))
    assert "".join(c or "" for _, c in arrivals) == toks(4)
    gaps = [b[0] - a[0] for a, b in zip(arrivals, arrivals[1:])]
    assert len(gaps) == 5 and all(g >= 0.1 for g in gaps), gaps


def test_stream_stall(mock):
    client = oai(mock, timeout=1.0)
    got = []
    t0 = time.monotonic()
    with pytest.raises(Exception) as e:  # noqa: B017 - a read timeout, whichever class the SDK surfaces
        for chunk in client.chat.completions.create(model="gpt-4o", messages=CHAT, stream=True,
                                                    extra_headers={"x-mock-stream-stall-after": "2"}):
            got.append(chunk.choices[0].delta.content)
    assert "timeout" in type(e.value).__name__.lower() or "timed out" in str(e.value).lower(), repr(e.value)
    assert got == ["", "tok0", " tok1"]
    assert time.monotonic() - t0 >= 0.9

    # Anthropic: the head events and K deltas, then nothing.
    got = []
    with pytest.raises(Exception) as e:  # noqa: B017
        with claude(mock, timeout=1.0).messages.stream(model="c", max_tokens=10, messages=MESSAGES,
                                                       extra_headers={"x-mock-stream-stall-after": "1"}) as s:
            for t in s.text_stream:
                got.append(t)
    assert "timeout" in type(e.value).__name__.lower() or "timed out" in str(e.value).lower(), repr(e.value)
    assert got == ["tok0"]
    # The stalled streams do not block the server.
    assert oai(mock).chat.completions.create(model="gpt-4o", messages=CHAT, max_tokens=1).usage.completion_tokens == 1


# --------------------------------------------------------------------------------------------
# control API


def test_control_api_counted_faults(mock):
    client = oai(mock)
    queued = mock.program_faults({"status": 503, "count": 2, "retry_after": 1})
    assert queued == [{"status": 503, "retry_after": 1, "count": 2}]
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as e:
            client.chat.completions.create(model="gpt-4o", messages=CHAT)
        assert e.value.status_code == 503 and e.value.response.headers["retry-after"] == "1"
    assert client.chat.completions.create(model="gpt-4o", messages=CHAT, max_tokens=1).choices[0].message.content == "tok0"
    assert mock.pending_faults() == []

    # In order across entries; listing models does not consume faults.
    mock.program_faults({"reset": True, "count": 1}, {"status": 429, "retry_after": 3})
    oai(mock).models.list()
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4o", messages=CHAT)
    with pytest.raises(anthropic.RateLimitError) as e:  # any provider request takes the next fault
        claude(mock).messages.create(model="c", max_tokens=1, messages=MESSAGES)
    assert e.value.response.headers["retry-after"] == "3"

    mock.program_faults({"latency_ms": 500, "count": 1})
    t0 = time.monotonic()
    client.chat.completions.create(model="gpt-4o", messages=CHAT)
    assert time.monotonic() - t0 >= 0.5
    t0 = time.monotonic()
    client.chat.completions.create(model="gpt-4o", messages=CHAT)
    assert time.monotonic() - t0 < 0.5

    # Streams: programmed stall and token count.
    mock.program_faults({"completion_tokens": 2})
    assert client.chat.completions.create(model="gpt-4o", messages=CHAT).usage.completion_tokens == 2

    mock.program_faults({"status": 500, "count": 5})
    assert len(mock.pending_faults()) == 1
    mock.clear_faults()
    assert mock.pending_faults() == []
    client.chat.completions.create(model="gpt-4o", messages=CHAT)

    r = requests.post(mock.url + "/_mock/faults", json={"status": 503, "cuont": 2}, timeout=5)
    assert r.status_code == 400 and "cuont" in r.json()["error"]
    r = requests.post(mock.url + "/_mock/faults", data=b"nope", timeout=5)
    assert r.status_code == 400


def test_sdk_retries_through_programmed_faults(mock):
    """What Envoy's retry policy will meet: a counted 503 then success, seen by a retrying client."""
    mock.program_faults({"status": 503, "count": 1, "retry_after": 1})
    c = oai(mock, max_retries=2).chat.completions.create(model="gpt-4o", messages=CHAT, max_tokens=2)
    assert c.choices[0].message.content == toks(2)
    assert len([r for r in mock.requests() if r["path"] == "/v1/chat/completions"]) == 2


def test_control_api_request_log(mock):
    client = oai(mock)
    client.chat.completions.create(model="gpt-4o-mini", messages=CHAT, max_tokens=1,
                                   extra_headers={"x-tenant": "acme"})
    claude(mock).messages.create(model="claude-x", max_tokens=1, messages=MESSAGES)
    requests.post(mock.url + "/v1/chat/completions", data=b"not json", timeout=5)
    log = mock.requests()
    assert [(r["method"], r["path"]) for r in log] == [("POST", "/v1/chat/completions"), ("POST", "/v1/messages"),
                                                        ("POST", "/v1/chat/completions")]
    first = log[0]
    assert first["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert first["headers"]["x-tenant"] == "acme"
    assert first["body"]["model"] == "gpt-4o-mini" and first["body"]["messages"] == CHAT
    assert first["query"] is None and isinstance(first["time"], float)
    # (anthropic 2.x sends its API key as `Authorization: Bearer`, 0.x as `x-api-key`)
    h = log[1]["headers"]
    assert ANTHROPIC_KEY in (h.get("x-api-key"), h.get("authorization", "").removeprefix("Bearer "))
    assert "anthropic-version" in h
    assert log[2]["body"] is None and log[2]["body_text"] == "not json"
    # /_mock/* is not logged and needs no auth
    assert requests.delete(mock.url + "/_mock/requests", timeout=5).json() == {"cleared": 3}
    assert mock.requests() == []


def test_two_deployments_are_told_apart(mock_provider):
    a = mock_provider(name="openai-a")
    b = mock_provider(name="openai-b")
    ca = openai.OpenAI(base_url=a.url + "/v1", api_key="anything", max_retries=0)
    cb = openai.OpenAI(base_url=b.url + "/v1", api_key="anything", max_retries=0)
    ra = ca.chat.completions.with_raw_response.create(model="m", messages=CHAT)
    rb = cb.chat.completions.with_raw_response.create(model="m", messages=CHAT)
    assert (ra.headers["x-mock-provider"], rb.headers["x-mock-provider"]) == ("openai-a", "openai-b")
    assert ra.parse().system_fingerprint == "fp_openai-a" and rb.parse().id.startswith("chatcmpl-openai-b-")
    # No key configured: any key is accepted, a missing one still is not.
    r = requests.post(a.url + "/v1/chat/completions", json={"model": "m", "messages": CHAT}, timeout=5)
    assert r.status_code == 401


def test_embeddings_base64_is_little_endian_float32(mock):
    r = requests.post(mock.url + "/v1/embeddings", timeout=5, headers={"authorization": f"Bearer {OPENAI_KEY}"},
                      json={"model": "e", "input": ["a", "b"], "encoding_format": "base64"})
    f = requests.post(mock.url + "/v1/embeddings", timeout=5, headers={"authorization": f"Bearer {OPENAI_KEY}"},
                      json={"model": "e", "input": ["a", "b"]})
    for d64, dfl in zip(r.json()["data"], f.json()["data"]):
        raw = base64.b64decode(d64["embedding"])
        assert list(struct.unpack("<8f", raw)) == dfl["embedding"]
    assert json.loads(r.text)["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
