"""The API surface beyond plain OpenAI chat, against the default server: the quick-start model
ids and --alias, llama.cpp's token utilities, and Ollama's API through the real ``ollama``
client and as raw NDJSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import ollama
import pytest
import requests
from hologram.server.cli import build_parser, model_specs
from hologram.server.settings import ModelSpec, model_ids
from openai import OpenAI

from .conftest import API_KEYS, EMBEDDING_MODEL_ID, Server

README = Path(__file__).resolve().parents[2] / "README.md"


def _post(srv: Server, path: str, body: dict[str, Any], **kw: Any) -> requests.Response:
    return requests.post(srv.base + path, json=body, timeout=60, **kw)


# -- model ids -----------------------------------------------------------------------------------


def test_default_ids_are_listed_and_resolve(server: Server, model_id: str) -> None:
    data = requests.get(server.v1 + "/models", timeout=10).json()["data"]
    ids = [m["id"] for m in data]
    assert ids[:2] == [model_id, "hologram-completion-v1"]  # the file-name id stays first
    assert ids[2:] == [EMBEDDING_MODEL_ID, "hologram-embedding-v1"]
    for mid in ("hologram-completion-v1", "hologram-embedding-v1"):
        card = requests.get(f"{server.v1}/models/{mid}", timeout=10).json()
        assert card["id"] == mid
    card = requests.get(f"{server.v1}/models/hologram-completion-v1", timeout=10).json()
    assert card["meta"]["ids"] == [model_id, "hologram-completion-v1"]
    # The default model carries no general.sampling.* keys: llama.cpp's defaults.
    sd = {k: (v["value"], v["source"]) for k, v in card["sampling_defaults"].items()}
    assert sd["temperature"] == (0.8, "default") and sd["top_k"] == (40, "default")
    assert sd["top_p"] == (0.95, "default") and sd["min_p"] == (0.05, "default")
    assert sd["seed"] == (None, "default")
    assert "sampling_defaults" not in requests.get(
        f"{server.v1}/models/hologram-embedding-v1", timeout=10).json()
    client = OpenAI(base_url=server.v1, api_key="unused")
    r = client.chat.completions.create(model="hologram-completion-v1", max_tokens=5,
                                       messages=[{"role": "user", "content": "Hi"}])
    assert r.model == model_id and r.choices[0].message.content
    assert requests.get(f"{server.v1}/models/hologram-completion-v2", timeout=10
                        ).status_code == 404


def test_alias_binds_to_the_model_before_it() -> None:
    def ids(argv: list[str]) -> list[list[str]]:
        return model_ids(model_specs(build_parser().parse_args(argv).entries or []))

    a, b = "/models/a.gguf", "/other/b.gguf"
    assert ids(["-m", a, "--alias", "x", "--alias", "y", "-m", b, "--alias", "z"]) == [
        ["x", "a", "y"], ["z", "b"]]
    assert ids(["--alias", "w", "-m", a, "-m", b]) == [["w", "a"], ["b"]]
    # Two files of one name: the file-name id is dropped; each needs an alias.
    assert ids(["-m", a, "--alias", "p", "-m", "/x/a.gguf", "--alias", "q"]) == [["p"], ["q"]]
    with pytest.raises(ValueError, match="give each an --alias"):
        ids(["-m", a, "-m", "/x/a.gguf"])
    with pytest.raises(ValueError, match="names two models"):
        ids(["-m", a, "--alias", "same", "-m", b, "--alias", "same"])
    # Without -m the aliases go to the default chat model, which keeps its other ids.
    default = ids(["--alias", "mine"])
    assert default[0][0] == "mine" and "hologram-completion-v1" in default[0]
    assert model_ids([ModelSpec(Path(a), aliases=("x", "x", "a"))]) == [["a", "x"]]


def test_sampling_flags_are_validated(tmp_path: Path) -> None:
    for argv in (["--temp", "2.5"], ["--top-p", "-0.1"], ["--top-k", "x"],
                 ["--repeat-penalty", "0"], ["--seed", "-1"], ["--min-p", "nan"]):
        proc = subprocess.run([sys.executable, "-m", "hologram.server.cli", *argv],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert argv[0] in proc.stderr


# -- token utilities ------------------------------------------------------------------------------


def test_tokenize_detokenize(server: Server) -> None:
    text = "Hello, world! 🦙 naïve"
    r = _post(server, "/tokenize", {"content": text})
    assert r.status_code == 200, r.text
    ids = r.json()["tokens"]
    assert ids and all(isinstance(t, int) for t in ids)
    # add_special defaults to false, as in llama.cpp; the BOS of this model is <|im_start|>.
    with_bos = _post(server, "/tokenize", {"content": text, "add_special": True}).json()["tokens"]
    assert len(with_bos) >= len(ids) and with_bos[-len(ids):] == ids
    assert _post(server, "/detokenize", {"tokens": ids}).json() == {"content": text}
    assert _post(server, "/detokenize", {"tokens": []}).json() == {"content": ""}
    pieces = _post(server, "/tokenize", {"content": text, "with_pieces": True}).json()["tokens"]
    assert [p["id"] for p in pieces] == ids
    raw = b""
    for p in pieces:
        if isinstance(p["piece"], list):  # not valid UTF-8 alone: its bytes
            data = bytes(p["piece"])
            with pytest.raises(UnicodeDecodeError):
                data.decode("utf-8")
            raw += data
        else:
            raw += p["piece"].encode()
    assert raw.decode() == text
    assert any(isinstance(p["piece"], list) for p in pieces)  # the llama splits
    # Control-token text is parsed as the control token unless parse_special is false.
    special = _post(server, "/tokenize", {"content": "<|im_start|>"}).json()["tokens"]
    plain = _post(server, "/tokenize", {"content": "<|im_start|>", "parse_special": False}
                  ).json()["tokens"]
    assert len(special) == 1 and len(plain) > 1
    # The embedding model has its own vocabulary.
    emb = _post(server, "/tokenize", {"content": "hello", "model": "hologram-embedding-v1"})
    assert emb.status_code == 200 and emb.json()["tokens"] != _post(
        server, "/tokenize", {"content": "hello"}).json()["tokens"]


def test_apply_template(server: Server) -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    r = _post(server, "/apply-template", {"messages": msgs})
    assert r.status_code == 200, r.text
    prompt = r.json()["prompt"]
    assert prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                      "<|im_start|>assistant\n")
    # The rendered prompt is what chat completions read: same prompt token count.
    ids = _post(server, "/tokenize", {"content": prompt}).json()["tokens"]
    chat = requests.post(server.v1 + "/chat/completions", json={
        "messages": msgs, "max_tokens": 1}, timeout=60).json()
    assert chat["usage"]["prompt_tokens"] == len(ids)


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/tokenize", {}, "content"),
    ("/tokenize", {"content": 5}, "content"),
    ("/tokenize", {"content": "x", "model": "nope"}, "model"),
    ("/detokenize", {"tokens": [10**9]}, "tokens.0"),
    ("/detokenize", {"tokens": "1 2"}, "tokens"),
    ("/apply-template", {"messages": []}, "messages"),
    ("/apply-template", {"messages": [{"role": "user", "content": "x"}],
                         "model": "hologram-embedding-v1"}, "model"),
])
def test_token_utility_errors(server: Server, path: str, body: dict[str, Any],
                              param: str) -> None:
    r = _post(server, path, body)
    assert r.status_code in (400, 404), r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param


def test_new_routes_need_the_key(guarded: Server) -> None:
    r = _post(guarded, "/tokenize", {"content": "hi"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = _post(guarded, "/api/chat", {"model": "x", "messages": []})
    assert r.status_code == 401 and isinstance(r.json()["error"], str)  # Ollama's shape
    assert requests.get(guarded.base + "/api/tags", timeout=10).status_code == 401
    ok = _post(guarded, "/tokenize", {"content": "hi"},
               headers={"Authorization": f"Bearer {API_KEYS[0]}"})
    assert ok.status_code == 200 and ok.json()["tokens"]
    r = requests.post(guarded.base + "/detokenize", data="{}", timeout=10, headers={
        "Authorization": f"Bearer {API_KEYS[0]}", "Content-Type": "text/plain"})
    assert r.status_code == 415
    r = requests.post(guarded.base + "/api/tags", timeout=10,
                      headers={"Authorization": f"Bearer {API_KEYS[0]}"})
    assert r.status_code == 405 and isinstance(r.json()["error"], str)


# -- Ollama --------------------------------------------------------------------------------------


@pytest.fixture()
def client(server: Server) -> ollama.Client:
    return ollama.Client(host=server.base)


def test_ollama_client_list_show_version(client: ollama.Client, server: Server,
                                         model_id: str) -> None:
    names = [m.model for m in client.list().models]
    assert names == [model_id, "hologram-completion-v1", EMBEDDING_MODEL_ID,
                     "hologram-embedding-v1"]
    m = client.list().models[0]
    assert m.size and m.size > 10_000_000 and m.digest and m.modified_at is not None
    assert m.details is not None and m.details.format == "gguf"
    assert m.details.family == "llama" and m.details.quantization_level == "Q4_1"
    shown = client.show("hologram-completion-v1")
    assert shown.template and "<|im_start|>" in shown.template
    assert shown.capabilities == ["completion"]
    assert shown.modelinfo and shown.modelinfo["general.architecture"] == "llama"
    assert shown.parameters and "temperature 0.8" in shown.parameters
    assert client.show("hologram-embedding-v1").capabilities == ["embedding"]
    v = requests.get(server.base + "/api/version", timeout=10).json()["version"]
    assert isinstance(v, str) and v


def test_ollama_client_chat(client: ollama.Client) -> None:
    msgs = [{"role": "user", "content": "Say hello."}]
    r = client.chat(model="hologram-completion-v1", messages=msgs,
                    options={"num_predict": 8, "temperature": 0})
    assert r.done and r.done_reason in ("stop", "length") and r.message.role == "assistant"
    assert r.message.content and r.eval_count and r.eval_count <= 8
    assert r.prompt_eval_count and r.prompt_eval_count > 5
    assert r.total_duration and r.eval_duration is not None and r.total_duration > 0
    parts = list(client.chat(model="hologram-completion-v1:latest", messages=msgs, stream=True,
                             options={"num_predict": 8, "temperature": 0}))
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts) == r.message.content
    assert parts[-1].eval_count == r.eval_count


def test_ollama_client_generate(client: ollama.Client) -> None:
    r = client.generate(model="hologram-completion-v1", prompt="Once upon a time",
                        raw=True, options={"num_predict": 6, "temperature": 0, "stop": ["\n"]})
    assert r.done and r.response and r.context and len(r.context) >= r.prompt_eval_count
    streamed = list(client.generate(model="hologram-completion-v1", prompt="Once upon a time",
                                    raw=True, stream=True,
                                    options={"num_predict": 6, "temperature": 0,
                                             "stop": ["\n"]}))
    assert "".join(p.response or "" for p in streamed) == r.response
    # A continuation from the returned context.
    more = client.generate(model="hologram-completion-v1", prompt="", context=r.context,
                           raw=True, options={"num_predict": 3, "temperature": 0})
    assert more.done and more.prompt_eval_count == len(r.context)
    # With the chat template and a system prompt.
    templ = client.generate(model="hologram-completion-v1", prompt="Hi", system="Be brief.",
                            options={"num_predict": 4})
    assert templ.done and templ.prompt_eval_count and templ.prompt_eval_count > 5
    # An empty prompt "loads" the model.
    load = client.generate(model="hologram-completion-v1")
    assert load.done and load.done_reason == "load"


def test_ollama_client_embed(client: ollama.Client, server: Server) -> None:
    r = client.embed(model="hologram-embedding-v1", input=["Hello, world!", "bye"])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 384
    openai_vec = requests.post(server.v1 + "/embeddings", json={
        "model": "hologram-embedding-v1", "input": "Hello, world!"}, timeout=60
        ).json()["data"][0]["embedding"]
    assert r.embeddings[0] == pytest.approx(openai_vec, abs=1e-6)
    assert r.prompt_eval_count and r.prompt_eval_count > 2
    # Longer than the context (512 tokens): cut to fit by default, refused without truncate.
    long_text = "word " * 2000
    cut = client.embed(model="hologram-embedding-v1", input=[long_text, "Hello, world!"])
    assert cut.prompt_eval_count and cut.prompt_eval_count <= 512 + 10
    assert cut.embeddings[1] == pytest.approx(openai_vec, abs=1e-6)
    ids = _post(server, "/tokenize", {"content": long_text, "add_special": True,
                                      "model": "hologram-embedding-v1"}).json()["tokens"]
    kept = ids[:511] + ids[-1:]  # [CLS] ... [SEP]: the closing token stays
    want = requests.post(server.v1 + "/embeddings", json={
        "model": "hologram-embedding-v1", "input": [kept]}, timeout=60).json()
    assert cut.embeddings[0] == pytest.approx(want["data"][0]["embedding"], abs=1e-5)
    with pytest.raises(ollama.ResponseError) as e:
        client.embed(model="hologram-embedding-v1", input=long_text, truncate=False)
    assert e.value.status_code == 400
    old = client.embeddings(model="hologram-embedding-v1", prompt="Hello, world!")
    assert old.embedding == pytest.approx(openai_vec, abs=1e-6)


def test_ollama_errors(client: ollama.Client, server: Server) -> None:
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 404 and "no-such-model" in str(e.value.error)
    bad = [({"model": "hologram-completion-v1", "messages": [{"role": "user", "content": "x"}],
             "options": {"temperature": "hot"}}, "options.temperature"),
           ({"model": "hologram-completion-v1", "messages": [{"role": "user", "content": "x"}],
             "format": "yaml"}, "format"),
           ({"model": "hologram-completion-v1", "messages": [{"role": "user", "content": "x"}],
             "format": {"type": "object", "uniqueItems": True, "properties": {"a": 1}}},
            "format"),
           ({"model": "hologram-completion-v1", "messages": [{"role": "wizard", "content": "x"}],
             "stream": False}, "role")]
    for body, what in bad:
        r = _post(server, "/api/chat", body)
        assert r.status_code == 400, r.text
        assert set(r.json()) == {"error"} and what in r.json()["error"]


def test_ollama_ndjson_shapes(server: Server) -> None:
    with requests.post(server.base + "/api/chat", json={
            "model": "hologram-completion-v1", "options": {"num_predict": 5, "num_ctx": 4096},
            "messages": [{"role": "user", "content": "Hi"}]}, stream=True, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    for part in lines[:-1]:
        assert set(part) == {"model", "created_at", "message", "done"} and not part["done"]
        assert part["message"]["role"] == "assistant" and part["model"] == \
            "hologram-completion-v1"
        assert part["created_at"].endswith("Z")
    last = lines[-1]
    assert last["done"] is True and last["message"] == {"role": "assistant", "content": ""}
    assert {"done_reason", "total_duration", "load_duration", "prompt_eval_count",
            "prompt_eval_duration", "eval_count", "eval_duration"} <= set(last)
    assert last["eval_count"] == 5 and last["done_reason"] == "length"


def test_ollama_format_is_enforced(client: ollama.Client) -> None:
    """``format`` ("json" or a JSON schema) goes to the constrained decoder, as Ollama does."""
    schema = {"type": "object",
              "properties": {"city": {"type": "string", "maxLength": 20},
                             "population": {"type": "integer", "minimum": 0}},
              "required": ["city", "population"]}
    for seed in (1, 2, 3):
        r = client.chat(model="hologram-completion-v1", format=schema,
                        messages=[{"role": "user", "content": "Name a city as JSON."}],
                        options={"seed": seed, "temperature": 0.9, "num_predict": 200})
        doc = json.loads(r.message.content)
        jsonschema.validate(doc, schema)
    g = client.generate(model="hologram-completion-v1", prompt="Some JSON:", format="json",
                        options={"seed": 7, "num_predict": 200}, stream=False)
    if g.done_reason == "stop":
        assert isinstance(json.loads(g.response), dict)
    else:
        assert g.response.startswith("{")
