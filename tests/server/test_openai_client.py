"""The real OpenAI Python client, sync and async, against a real hologram-serve."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from openai import AsyncOpenAI, NotFoundError, OpenAI

from .conftest import Server

HELLO: Any = [{"role": "user", "content": "Hello!"}]


@pytest.fixture(scope="module")
def client(server: Server) -> OpenAI:
    return OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120)


def test_models(client: OpenAI, model_id: str, embedding_model_id: str) -> None:
    models = client.models.list().data
    # Each model's file-name id, then the quick-start id of the default model.
    assert [m.id for m in models] == [model_id, "hologram-completion-v1", embedding_model_id,
                                      "hologram-embedding-v1"]
    assert model_id == "SmolLM2-135M-Instruct.Q4_1"  # file stem, no alias
    m = client.models.retrieve(model_id)
    assert m.id == model_id and m.object == "model" and m.owned_by
    with pytest.raises(NotFoundError):
        client.models.retrieve("no-such-model")


def test_completion(client: OpenAI, model_id: str) -> None:
    r = client.completions.create(model=model_id, prompt="Once upon a time", max_tokens=12,
                                  temperature=0)
    choice = r.choices[0]
    assert r.object == "text_completion" and r.model == model_id
    assert choice.text.strip()
    assert choice.finish_reason in ("stop", "length")
    assert r.usage is not None
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completion_default_max_tokens_is_16(client: OpenAI, model_id: str) -> None:
    r = client.completions.create(model=model_id, prompt="The list of numbers: 1, 2, 3,",
                                  temperature=0, extra_body={"ignore_eos": True})
    assert r.usage is not None and r.usage.completion_tokens == 16
    assert r.choices[0].finish_reason == "length"


def test_greedy_is_deterministic_and_streaming_matches(client: OpenAI, model_id: str) -> None:
    kw: dict[str, Any] = {"model": model_id, "prompt": "The capital of France is", "max_tokens": 10,
          "temperature": 0}
    a = client.completions.create(**kw).choices[0].text
    b = client.completions.create(**kw).choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw)
                       if c.choices)
    assert a == b == streamed


def test_chat_and_stream(client: OpenAI, model_id: str) -> None:
    r = client.chat.completions.create(model=model_id, messages=HELLO, max_tokens=20,
                                       temperature=0)
    msg = r.choices[0].message
    assert msg.role == "assistant" and msg.content and msg.refusal is None
    assert r.usage is not None and r.usage.completion_tokens <= 20
    chunks = list(client.chat.completions.create(
        model=model_id, messages=HELLO, max_tokens=20, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == msg.content  # greedy: streamed text equals the non-streamed text
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_chat_without_model_name(server: Server) -> None:
    import requests

    r = requests.post(server.v1 + "/chat/completions", timeout=60,
                      json={"messages": HELLO, "max_tokens": 4})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "SmolLM2-135M-Instruct.Q4_1"


def test_chat_n_logprobs_stop_seed(client: OpenAI, model_id: str) -> None:
    r = client.chat.completions.create(
        model=model_id, messages=HELLO, max_tokens=8, n=2, seed=7, temperature=0.9,
        logprobs=True, top_logprobs=3)
    assert [c.index for c in r.choices] == [0, 1]
    for c in r.choices:
        assert c.logprobs is not None and c.logprobs.content
        for t in c.logprobs.content:
            assert t.logprob <= 0 and len(t.top_logprobs) == 3 and t.bytes is not None
    again = client.chat.completions.create(
        model=model_id, messages=HELLO, max_tokens=8, n=2, seed=7, temperature=0.9)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]
    kw: dict[str, Any] = {"model": model_id, "prompt": "1, 2, 3, 4, 5,", "max_tokens": 12, "temperature": 0}
    full = client.completions.create(**kw).choices[0].text
    assert len(full) > 4
    stop = full[2:4]
    stopped = client.completions.create(stop=[stop, "zzzz"], **kw)
    assert stopped.choices[0].text == full[: full.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"


def test_completion_logprobs_and_echo(client: OpenAI, model_id: str) -> None:
    r = client.completions.create(model=model_id, prompt="Hello there", max_tokens=4,
                                  temperature=0, logprobs=2, echo=True)
    c = r.choices[0]
    assert c.text.startswith("Hello there")
    assert c.logprobs is not None and c.logprobs.tokens and c.logprobs.token_logprobs
    assert c.logprobs.token_logprobs[0] is None  # the first prompt token has no context
    assert len(c.logprobs.tokens) == len(c.logprobs.text_offset or [])
    assert "".join(c.logprobs.tokens).startswith("Hello there")


def test_prompt_forms(client: OpenAI, model_id: str) -> None:
    r = client.completions.create(model=model_id, prompt=["A", "B"], max_tokens=2, n=2)
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
    ids = [28, 2483, 28]
    r = client.completions.create(model=model_id, prompt=ids, max_tokens=2)
    assert r.usage is not None and r.usage.prompt_tokens == len(ids)
    r = client.completions.create(model=model_id, prompt=[ids, ids[:2]], max_tokens=2)
    assert r.usage is not None and r.usage.prompt_tokens == 5 and len(r.choices) == 2


def test_embeddings(client: OpenAI, model_id: str, embedding_model_id: str) -> None:
    # The decoder model embeds too (pooled hidden states).
    d = client.embeddings.create(model=model_id, input="Hello, world!", encoding_format="float")
    assert len(d.data[0].embedding) == 576
    model_id = embedding_model_id
    e = client.embeddings.create(model=model_id, input="Hello, world!")  # base64 by default
    v = np.array(e.data[0].embedding)
    assert v.shape == (384,)
    assert abs(np.linalg.norm(v) - 1) < 1e-3
    assert e.usage.prompt_tokens == e.usage.total_tokens > 0
    f = client.embeddings.create(model=model_id, input="Hello, world!", encoding_format="float")
    assert np.allclose(np.array(f.data[0].embedding), v, atol=1e-6)  # deterministic
    e2 = client.embeddings.create(model=model_id, input=["a", "b"], dimensions=128)
    assert [d.index for d in e2.data] == [0, 1]
    for d in e2.data:
        w = np.array(d.embedding)
        assert w.shape == (128,) and abs(np.linalg.norm(w) - 1) < 1e-3
    tok = client.embeddings.create(model=model_id, input=[[28, 2483], [28]])
    assert len(tok.data) == 2 and tok.usage.prompt_tokens == 3


def test_async_client(server: Server, model_id: str, embedding_model_id: str) -> None:
    async def run() -> None:
        client = AsyncOpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120)
        models = await client.models.list()
        assert models.data[0].id == model_id
        r = await client.completions.create(model=model_id, prompt="Once upon a time",
                                            max_tokens=8)
        assert r.choices[0].text

        async def chat_stream() -> str:
            stream: Any = await client.chat.completions.create(
                model=model_id, messages=HELLO, max_tokens=10, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream
                            if c.choices])

        # several clients streaming at once
        texts = await asyncio.gather(*(chat_stream() for _ in range(4)))
        assert all(texts)
        e = await client.embeddings.create(model=embedding_model_id, input=["x", "y"],
                                           dimensions=16)
        assert len(e.data) == 2
        await client.close()

    asyncio.run(run())
