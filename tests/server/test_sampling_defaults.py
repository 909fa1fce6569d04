"""Sampling defaults, every layer of the one rule: request field, else the server's flag, else
the file's ``general.sampling.*`` keys, else llama.cpp's defaults; in the Python API, the
OpenAI routes and the Ollama routes, and as ``GET /v1/models/{id}`` reports them."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import hologram
import pytest
import requests
from hologram import _core
from hologram.sampling import DEFAULTS, SamplingDefaults, SamplingParams

from .conftest import Server, start_server

PROMPT = "Once upon a time"

#: The keys the test model carries (gguf-py's Keys.General.SAMPLING_* names).
FILE_KEYS: dict[str, tuple[int, bytes]] = {
    "general.sampling.temp": (gguf.GGUFValueType.FLOAT32, struct.pack("<f", 0.0)),
    "general.sampling.top_k": (gguf.GGUFValueType.INT32, struct.pack("<i", 7)),
    "general.sampling.min_p": (gguf.GGUFValueType.FLOAT32, struct.pack("<f", 0.1)),
    "general.sampling.penalty_last_n": (gguf.GGUFValueType.INT32, struct.pack("<i", -1)),
}


def copy_with_keys(src: Path, dst: Path, keys: dict[str, tuple[int, bytes]]) -> Path:
    """``src`` with more metadata entries: the header's count, the old entries, the new ones,
    the tensor infos, padding to the file's alignment, then the tensor data as it was."""
    r = gguf.GGUFReader(str(src))
    fields = list(r.fields.values())
    last = fields[-1]
    kv_end = last.offset + sum(p.nbytes for p in last.parts)
    infos_end = max(t.field.offset + sum(p.nbytes for p in t.field.parts) for t in r.tensors)
    raw = src.read_bytes()
    (n_kv,) = struct.unpack_from("<Q", raw, 16)
    extra = b"".join(struct.pack("<Q", len(k)) + k.encode() + struct.pack("<I", int(t)) + v
                     for k, (t, v) in keys.items())
    body = raw[:16] + struct.pack("<Q", n_kv + len(keys)) + raw[24:kv_end] + extra \
        + raw[kv_end:infos_end]
    body += b"\0" * ((-len(body)) % r.alignment)
    dst.write_bytes(body + raw[r.data_offset:])
    return dst


@pytest.fixture(scope="module")
def tuned_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tuned") / "tuned.gguf"
    return copy_with_keys(hologram.default_model_path(), out, FILE_KEYS)


def test_llama_cpp_defaults_for_a_file_without_keys() -> None:
    e = hologram.Engine(hologram.default_model_path(), n_ctx=256, n_seq_max=1)
    assert e.sampling_from_file == []
    assert dict(e.sampling_defaults) == dict(_core.sampling_defaults()) == dict(DEFAULTS)
    d = e.sampling_defaults
    assert (d["temperature"], d["top_k"], d["top_p"], d["min_p"]) == (0.8, 40, 0.95, 0.05)


def test_python_api_takes_the_file_keys(tuned_model: Path) -> None:
    e = hologram.Engine(tuned_model, n_ctx=256, n_seq_max=2)
    assert sorted(e.sampling_from_file) == ["min_p", "repeat_last_n", "temperature", "top_k"]
    d = e.sampling_defaults
    assert (d["temperature"], d["top_k"], d["min_p"]) == (0.0, 7, 0.1)
    assert d["repeat_last_n"] == 256  # penalty_last_n -1: the whole context, as in llama.cpp
    assert d["top_p"] == DEFAULTS["top_p"]  # not in the file: llama.cpp's
    # The file's temperature 0 applies when the call leaves it unset: greedy, whatever the seed.
    greedy = e.generate(PROMPT, max_tokens=12, temperature=0.0).text
    assert e.generate(PROMPT, max_tokens=12, seed=1).text == greedy
    assert e.generate(PROMPT, max_tokens=12, seed=2).text == greedy
    assert "".join(e.stream(PROMPT, max_tokens=12, seed=3)) == greedy
    # A value the call gives wins over the file's.
    sampled = {e.generate(PROMPT, max_tokens=12, temperature=1.5, top_k=0, seed=s).text
               for s in range(4)}
    assert len(sampled) > 1


def test_resolution_order_in_python(tuned_model: Path) -> None:
    e = hologram.Engine(tuned_model, n_ctx=256, n_seq_max=1)
    d = SamplingDefaults.resolve(e, {"temperature": 0.3, "seed": 9})
    assert d.values["temperature"] == 0.3 and d.sources["temperature"] == "flag"
    assert d.values["top_k"] == 7 and d.sources["top_k"] == "gguf"
    assert d.values["top_p"] == DEFAULTS["top_p"] and d.sources["top_p"] == "default"
    p = SamplingParams.build(d, temperature=None, top_k=3)
    assert (p.temperature, p.top_k, p.min_p, p.seed) == (0.3, 3, 0.1, 9)
    assert SamplingParams.build(d, seed=4).seed == 4
    with pytest.raises(TypeError):
        SamplingDefaults.resolve(e, {"temp": 1.0})


@pytest.fixture(scope="module")
def tuned_server(tuned_model: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[Server]:
    srv = start_server(["-m", str(tuned_model), "--alias", "story", "--ctx", "256",
                        "--parallel", "4", "--threads", "2", "--temp", "1.5", "--top-p", "0.9",
                        "--seed", "3"], tmp_path_factory.mktemp("tuned-logs"))
    yield srv
    assert srv.stop() == 0


def _complete(srv: Server, **fields: Any) -> str:
    r = requests.post(srv.v1 + "/completions", json={
        "model": "story", "prompt": PROMPT, "max_tokens": 12, **fields}, timeout=60)
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["text"])


def test_model_card_reports_defaults_and_sources(tuned_server: Server) -> None:
    for mid in ("story", "tuned"):  # the alias (public id), then the file-name id
        card = requests.get(f"{tuned_server.v1}/models/{mid}", timeout=10).json()
        got = {k: (v["value"], v["source"]) for k, v in card["sampling_defaults"].items()}
        assert got["temperature"] == (1.5, "flag")
        assert got["top_p"] == (0.9, "flag")
        assert got["seed"] == (3, "flag")
        assert got["top_k"] == (7, "gguf")
        assert got["min_p"] == (0.1, "gguf")
        assert got["repeat_last_n"] == (256, "gguf")
        assert got["repeat_penalty"] == (1.0, "default")
    ids = [m["id"] for m in requests.get(tuned_server.v1 + "/models", timeout=10).json()["data"]]
    assert ids == ["story", "tuned"]


def test_server_resolution_order(tuned_server: Server) -> None:
    # --seed: requests without a seed all draw the same.
    assert _complete(tuned_server) == _complete(tuned_server)
    # --temp 1.5 over the file's 0: different seeds draw different texts.
    assert len({_complete(tuned_server, seed=s, top_k=0) for s in range(5)}) > 1
    # The request's temperature over the flag: greedy whatever the seed.
    greedy = {_complete(tuned_server, temperature=0, seed=s) for s in range(3)}
    assert len(greedy) == 1


def test_ollama_routes_follow_the_same_rule(tuned_server: Server) -> None:
    msgs = [{"role": "user", "content": "Tell me a story."}]
    openai = requests.post(tuned_server.v1 + "/chat/completions", json={
        "model": "tuned", "messages": msgs, "max_tokens": 10}, timeout=60).json()
    ollama = requests.post(tuned_server.base + "/api/chat", json={
        "model": "tuned", "messages": msgs, "stream": False, "options": {"num_predict": 10}},
        timeout=60).json()
    # Both take --temp 1.5 and --seed 3: the same draw.
    assert ollama["message"]["content"] == openai["choices"][0]["message"]["content"]
    greedy = [requests.post(tuned_server.base + "/api/generate", json={
        "model": "story", "prompt": PROMPT, "raw": True, "stream": False,
        "options": {"num_predict": 12, "temperature": 0, "seed": s}}, timeout=60
        ).json()["response"] for s in (1, 2)]
    assert greedy[0] == greedy[1] == _complete(tuned_server, temperature=0)
