"""The OFFICIAL SDKs (`openai`, `anthropic`) through the gateway (envoy/demo.yaml + the built
filter, see test_gateway.py), streaming and not, on the same API and across translation.

Mock token rules (tests/mock-provider/README.md): chat prompt = Σ (words + 3) per message;
Anthropic input = words of `system` + Σ (words + 3); the answer is `tok0 tok1 …` with
min(max_tokens, 16) tokens. The model the provider saw is checked in its /_mock/requests.
"""

from __future__ import annotations

import anthropic
import openai
import pytest

from conftest import FREE_KEY, MOCK_ANTHROPIC_KEY, MOCK_OPENAI_KEY, PRO_KEY


def toks(n: int) -> str:
    return " ".join(f"tok{i}" for i in range(n))


CHAT = [
    {"role": "system", "content": "You are terse."},        # 3 words + 3
    {"role": "user", "content": "Say hello to the world"},  # 5 words + 3
]
CHAT_PROMPT = 14          # as an OpenAI upstream counts CHAT
CHAT_AS_ANTHROPIC = 3 + 8  # the same conversation once translated: system is a parameter
SYSTEM, USER = "You are terse.", [{"role": "user", "content": "Say hello to the world"}]


@pytest.fixture
def gw(demo_gateway):
    return demo_gateway


def oai(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=PRO_KEY, max_retries=0, timeout=30)


def claude(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=PRO_KEY, max_retries=0, timeout=30)


def only_upstream_request(gw, *deployments: str) -> tuple[str, dict]:
    """The one provider request the last call made, among `deployments`: (deployment, request)."""
    seen = [(d, r) for d in deployments for r in gw.upstream_requests(d)]
    assert len(seen) == 1, [(d, r["path"]) for d, r in seen]
    d, req = seen[0]
    h = req["headers"]
    assert "sk-demo" not in str(h), f"the gateway key reached {d}: {h}"
    if d == "anthropic":
        assert h.get("x-api-key") == MOCK_ANTHROPIC_KEY, h
    else:
        assert h.get("authorization") == f"Bearer {MOCK_OPENAI_KEY}", h
    return d, req


# --------------------------------------------------------------------------------------------
# openai SDK


def test_openai_chat_on_openai(gw):
    c = oai(gw).chat.completions.create(model="gpt-4o-mini", messages=CHAT, max_tokens=5)
    assert c.object == "chat.completion" and c.model == "gpt-4o-mini"
    assert (c.choices[0].message.role, c.choices[0].message.content, c.choices[0].finish_reason) == \
        ("assistant", toks(5), "length")
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == (CHAT_PROMPT, 5, 19)
    dep, req = only_upstream_request(gw, "openai-a", "openai-b")
    assert req["path"] == "/v1/chat/completions" and req["body"]["model"] == "gpt-4o-mini"
    assert c.id.startswith(f"chatcmpl-{dep}-")


def test_openai_chat_stream_on_openai(gw):
    chunks = list(oai(gw).chat.completions.create(model="gpt-4o-mini", messages=CHAT, max_tokens=4, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == toks(4)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)
    only_upstream_request(gw, "openai-a", "openai-b")


def test_openai_chat_stream_with_usage_on_openai(gw):
    chunks = list(oai(gw).chat.completions.create(model="gpt-4o-mini", messages=CHAT, max_tokens=3, stream=True,
                                                  stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (CHAT_PROMPT, 3, 17)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == toks(3)
    _, req = only_upstream_request(gw, "openai-a", "openai-b")
    assert req["body"]["stream_options"] == {"include_usage": True}


def test_openai_chat_on_anthropic(gw):
    c = oai(gw).chat.completions.create(model="claude-haiku", messages=CHAT, max_tokens=6)
    assert c.object == "chat.completion" and c.model == "claude-haiku"
    assert (c.choices[0].message.content, c.choices[0].finish_reason) == (toks(6), "length")
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == \
        (CHAT_AS_ANTHROPIC, 6, CHAT_AS_ANTHROPIC + 6)
    _, req = only_upstream_request(gw, "anthropic")
    assert req["path"] == "/v1/messages"
    assert req["body"]["model"] == "claude-3-5-haiku-latest", "the model name was not rewritten"
    assert req["body"]["system"] in (SYSTEM, [{"type": "text", "text": SYSTEM}]), req["body"]
    assert req["body"]["max_tokens"] == 6


def test_openai_chat_stream_on_anthropic(gw):
    client = oai(gw)
    chunks = list(client.chat.completions.create(model="claude-haiku", messages=CHAT, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.model == "claude-haiku" for c in chunks)
    # No max_tokens: the plugin's default_max_output_tokens (256) is sent; the mock stops at 16.
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == toks(16)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"], finish
    last = chunks[-1]
    assert last.usage is not None and (last.usage.prompt_tokens, last.usage.completion_tokens) == \
        (CHAT_AS_ANTHROPIC, 16), last
    _, req = only_upstream_request(gw, "anthropic")
    assert req["body"]["model"] == "claude-3-5-haiku-latest" and req["body"]["stream"] is True
    assert req["body"]["max_tokens"] == 256
    # Without include_usage: no usage chunk, same text.
    gw.clear_mocks()
    chunks = list(client.chat.completions.create(model="claude-haiku", messages=CHAT, max_tokens=2, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == toks(2)
    assert all(c.usage is None for c in chunks), [c.usage for c in chunks]


def test_openai_completions_and_embeddings(gw):
    client = oai(gw)
    c = client.completions.create(model="gpt-4o-mini", prompt="Once upon a time", max_tokens=7)
    assert (c.object, c.model, c.choices[0].text) == ("text_completion", "gpt-4o-mini", toks(7))
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == (4, 7, 11)
    _, req = only_upstream_request(gw, "openai-a", "openai-b")
    assert req["path"] == "/v1/completions"
    gw.clear_mocks()
    e = client.embeddings.create(model="gpt-4o-mini", input=["hello world", "one two three"])
    assert e.model == "gpt-4o-mini" and len(e.data) == 2 and all(len(d.embedding) == 8 for d in e.data)
    assert (e.usage.prompt_tokens, e.usage.total_tokens) == (5, 5)
    _, req = only_upstream_request(gw, "openai-a", "openai-b")
    assert req["path"] == "/v1/embeddings"


def test_openai_sdk_errors(gw):
    with pytest.raises(openai.AuthenticationError) as e:
        openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-wrong", max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=CHAT)
    assert e.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as e:
        oai(gw).chat.completions.create(model="gpt-9", messages=CHAT)
    assert e.value.code == "model_not_found"
    assert [m.id for m in oai(gw).models.list()] == ["claude-haiku", "gpt-4o", "gpt-4o-mini"]


# --------------------------------------------------------------------------------------------
# anthropic SDK


def test_anthropic_messages_on_anthropic(gw):
    m = claude(gw).messages.create(model="claude-haiku", max_tokens=5, system=SYSTEM, messages=USER)
    assert (m.type, m.role, m.content[0].type, m.content[0].text) == ("message", "assistant", "text", toks(5))
    assert m.stop_reason == "max_tokens"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (CHAT_AS_ANTHROPIC, 5)
    _, req = only_upstream_request(gw, "anthropic")
    assert req["path"] == "/v1/messages" and req["body"]["model"] == "claude-3-5-haiku-latest"


def test_anthropic_messages_stream_on_anthropic(gw):
    with claude(gw).messages.stream(model="claude-haiku", max_tokens=100, system=SYSTEM, messages=USER) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == toks(16)
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == \
        ("end_turn", CHAT_AS_ANTHROPIC, 16)
    _, req = only_upstream_request(gw, "anthropic")
    assert req["body"]["model"] == "claude-3-5-haiku-latest" and req["body"]["stream"] is True


def test_anthropic_messages_on_openai(gw):
    m = claude(gw).messages.create(model="gpt-4o-mini", max_tokens=5, system=SYSTEM, messages=USER)
    assert (m.type, m.role, m.model) == ("message", "assistant", "gpt-4o-mini")
    assert m.content[0].text == toks(5) and m.stop_reason == "max_tokens"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (CHAT_PROMPT, 5)
    _, req = only_upstream_request(gw, "openai-a", "openai-b")
    assert req["path"] == "/v1/chat/completions"
    assert req["body"]["model"] == "gpt-4o-mini"
    assert req["body"]["messages"][0] == {"role": "system", "content": SYSTEM}, req["body"]


def test_anthropic_messages_stream_on_openai(gw):
    with claude(gw).messages.stream(model="gpt-4o-mini", max_tokens=4, system=SYSTEM, messages=USER) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == toks(4)
    assert final.model == "gpt-4o-mini" and final.stop_reason == "max_tokens"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (CHAT_PROMPT, 4)
    _, req = only_upstream_request(gw, "openai-a", "openai-b")
    assert req["body"]["stream"] is True and req["body"]["model"] == "gpt-4o-mini"


def test_sdks_see_the_rate_limit_as_their_rate_limit_error(gw):
    """demo-free asking for more than its 2,000 tokens a minute, on translated routes too."""
    free_oai = openai.OpenAI(base_url=gw.url + "/v1", api_key=FREE_KEY, max_retries=0, timeout=30)
    for model in ("gpt-4o-mini", "claude-haiku"):
        with pytest.raises(openai.RateLimitError) as e:
            free_oai.chat.completions.create(model=model, messages=CHAT, max_tokens=5000)
        assert (e.value.status_code, e.value.code, e.value.type) == (429, "rate_limit_exceeded", "tokens"), model
    free_claude = anthropic.Anthropic(base_url=gw.url, api_key=FREE_KEY, max_retries=0, timeout=30)
    for model in ("claude-haiku", "gpt-4o-mini"):
        with pytest.raises(anthropic.RateLimitError) as e:
            free_claude.messages.create(model=model, max_tokens=5000, messages=USER)
        assert e.value.status_code == 429 and "tokens" in str(e.value), model
    for d in ("openai-a", "openai-b", "anthropic"):
        assert gw.upstream_requests(d) == []
