"""hologram on Ray Serve (issue 15): a real ``hologram-serve --ray --replicas 2`` on loopback,
driven with the real ``openai`` client and plain HTTP; then ``serve run`` on the shipped config
file. Needs the ``ray`` extra (skipped without it)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
import yaml

pytest.importorskip("ray.serve")

from hologram.ray.deployments import merge_metrics
from hologram.ray.prefix import MIN_PREFIX_CHARS, prefix_keys

from .conftest import REPO, Server, free_port, serve_command, start_server

pytestmark = pytest.mark.ray

REPLICA = "X-Hologram-Replica"
STARTUP_S = 180.0

#: Four long, distinct system prompts (a few hundred tokens each).
SYSTEMS = [
    f"You are assistant number {k}. " + " ".join(
        f"Rule {i} for assistant {k}: answer about topic {k * 100 + i} briefly and politely."
        for i in range(30))
    for k in range(4)
]


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    logs = tmp_path_factory.mktemp("ray-logs")
    srv = start_server(["--ray", "--replicas", "2", "--threads", "1", "--ctx", "1024",
                        "--parallel", "8", "--shutdown-timeout", "20"], logs,
                       timeout=STARTUP_S)
    yield srv
    if srv.proc.poll() is None:
        srv.stop(60)


def _client(srv: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.v1, api_key="unused", max_retries=0, timeout=120)


def _stream(srv: Server, body: dict[str, Any]) -> tuple[str, list[bytes]]:
    """A streamed chat completion: the replica that served it and its SSE data lines."""
    with requests.post(srv.v1 + "/chat/completions", json={**body, "stream": True},
                       stream=True, timeout=120) as r:
        assert r.status_code == 200, r.text
        lines = [line[6:] for line in r.iter_lines() if line.startswith(b"data: ")]
        return r.headers[REPLICA], lines


def test_plain_streamed_and_embedding_requests_through_openai(ray_server: Server) -> None:
    client = _client(ray_server)
    raw = client.chat.completions.with_raw_response.create(
        model="hologram-completion-v1", max_tokens=8, temperature=0,
        messages=[{"role": "user", "content": "Name a colour."}])
    assert raw.headers[REPLICA]
    chat = raw.parse()
    assert chat.object == "chat.completion"
    assert chat.usage is not None and chat.usage.completion_tokens > 0
    assert chat.choices[0].message.content

    pieces = []
    with client.chat.completions.create(
            model="hologram-completion-v1", max_tokens=8, stream=True,
            messages=[{"role": "user", "content": "Count to five."}]) as stream:
        for chunk in stream:
            pieces.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(pieces)

    emb = client.embeddings.create(model="hologram-embedding-v1", input=["one", "two"])
    assert [d.index for d in emb.data] == [0, 1]
    assert len(emb.data[0].embedding) == 384

    # Errors keep OpenAI's shape through the proxy.
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", max_tokens=1,
                                       messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "model_not_found"


def test_sixteen_concurrent_streams_end_in_done_on_both_replicas(ray_server: Server) -> None:
    results: list[tuple[str, list[bytes]] | BaseException] = []

    def one(k: int) -> None:
        try:
            results.append(_stream(ray_server, {
                "model": "hologram-completion-v1", "max_tokens": 12, "ignore_eos": True,
                "messages": [{"role": "user", "content": f"Story {k}: a fox and a crow."}]}))
        except BaseException as exc:  # noqa: BLE001 - reported below
            results.append(exc)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert len(results) == 16
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    replicas = set()
    for replica, lines in results:  # type: ignore[misc]
        assert lines[-1] == b"[DONE]"
        tokens = sum(1 for line in lines[:-1]
                     for c in json.loads(line)["choices"] if c["delta"].get("content"))
        assert tokens >= 1
        replicas.add(replica)
    assert len(replicas) == 2, replicas


def test_requests_sharing_a_prefix_land_on_the_same_replica(ray_server: Server) -> None:
    client = _client(ray_server)
    served: dict[int, list[str]] = {}
    cached: dict[int, list[int]] = {}
    for turn in range(3):
        for k, system in enumerate(SYSTEMS):
            raw = client.chat.completions.with_raw_response.create(
                model="hologram-completion-v1", max_tokens=1,
                messages=[{"role": "system", "content": system},
                          {"role": "user", "content": f"Question {turn}?"}])
            served.setdefault(k, []).append(raw.headers[REPLICA])
            usage = raw.parse().usage
            assert usage is not None and usage.prompt_tokens_details is not None
            cached.setdefault(k, []).append(usage.prompt_tokens_details.cached_tokens or 0)
    for k, replicas in served.items():
        assert len(set(replicas)) == 1, served
        # The replica that holds the system prompt reuses it.
        assert min(cached[k][1:]) > 100, cached


def test_metrics_gather_every_replica(ray_server: Server) -> None:
    r = requests.get(ray_server.base + "/metrics", timeout=30)
    assert r.status_code == 200
    labelled = set(re.findall(r'^hologram_uptime_seconds\{replica="([^"]+)"', r.text, re.MULTILINE))
    assert len(labelled) == 2, r.text[:2000]
    assert set(r.headers[REPLICA].split(",")) == labelled
    # One HELP/TYPE per family, even with two replicas.
    assert r.text.count("# TYPE hologram_requests_total counter") == 1
    assert r.text.count("# HELP hologram_requests_total ") == 1


def test_sigterm_drains_and_exits_0(ray_server: Server) -> None:
    """Last test of the module: a stream in flight at SIGTERM still ends in [DONE]; a new
    request is refused 503; the process exits 0 and its Ray instance is gone."""
    out: list[Any] = []

    def long_stream() -> None:
        try:
            out.append(_stream(ray_server, {
                "model": "hologram-completion-v1", "max_tokens": 400, "ignore_eos": True,
                "messages": [{"role": "user", "content": "Write a long story."}]}))
        except BaseException as exc:  # noqa: BLE001 - checked below
            out.append(exc)

    t = threading.Thread(target=long_stream)
    t.start()
    time.sleep(1.0)
    ray_server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    late = requests.get(ray_server.v1 + "/models", timeout=10)
    assert late.status_code == 503
    assert late.json()["error"]["code"] == "shutting_down"
    t.join(60)
    assert ray_server.proc.wait(60) == 0, ray_server.log()[-3000:]
    assert len(out) == 1 and not isinstance(out[0], BaseException), out
    assert out[0][1][-1] == b"[DONE]"


def test_serve_run_with_the_config_file(tmp_path: Path) -> None:
    """deploy/ray-serve.yaml through Ray's own ``serve run`` (its port moved to a free one)."""
    config = yaml.safe_load((REPO / "deploy" / "ray-serve.yaml").read_text())
    port = free_port()
    config["http_options"]["port"] = port
    config["applications"][0]["args"]["replicas"] = 1
    path = tmp_path / "ray-serve.yaml"
    path.write_text(yaml.safe_dump(config))
    serve_exe = Path(sys.executable).parent / "serve"
    if not serve_exe.is_file():
        serve_exe = Path(shutil.which("serve") or "serve")
    log_path = tmp_path / "serve-run.log"
    proc = subprocess.Popen([str(serve_exe), "run", str(path)], stdout=subprocess.DEVNULL,
                            stderr=log_path.open("wb"), cwd=tmp_path)
    srv = Server(proc, port, log_path)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert proc.poll() is None, srv.log()[-3000:]
            assert time.monotonic() < deadline, srv.log()[-3000:]
            try:
                if requests.get(srv.base + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        chat = _client(srv).chat.completions.with_raw_response.create(
            model="hologram-completion-v1", max_tokens=4,
            messages=[{"role": "user", "content": "Hello"}])
        assert chat.headers[REPLICA]
        assert chat.parse().choices[0].message.content
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- pieces without a cluster ------------------------------------------------------------------

def _serve(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*serve_command(), *args], capture_output=True, text=True,
                          check=False, timeout=60)


def test_ray_flags_need_ray_and_a_free_port() -> None:
    proc = _serve(["--replicas", "2", "--ray-router", "pow2", "--port", str(free_port())])
    assert proc.returncode == 2
    assert "--replicas, --ray-router need --ray" in proc.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = _serve(["--ray", "--port", str(port)])
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_prefix_keys_follow_messages_and_prompts() -> None:
    system = {"role": "system", "content": "s" * MIN_PREFIX_CHARS}
    turn1 = [system, {"role": "user", "content": "first question"}]
    turn2 = [*turn1, {"role": "assistant", "content": "an answer"},
             {"role": "user", "content": "second question"}]
    k1 = prefix_keys("/v1/chat/completions", json.dumps({"messages": turn1}).encode())
    k2 = prefix_keys("/v1/chat/completions", json.dumps({"messages": turn2}).encode())
    assert len(k1) == 2 and len(k2) == 4
    assert k2[:2] == k1  # the next turn shares every key of the turn before
    other = prefix_keys("/v1/chat/completions", json.dumps(
        {"messages": [{"role": "system", "content": "t" * MIN_PREFIX_CHARS}]}).encode())
    assert not set(other) & set(k1)
    short = prefix_keys("/v1/chat/completions", json.dumps(
        {"messages": [{"role": "user", "content": "hi"}]}).encode())
    assert short == []
    p = prefix_keys("/v1/completions", json.dumps({"prompt": "x" * 1100}).encode())
    q = prefix_keys("/v1/completions", json.dumps({"prompt": "x" * 600}).encode())
    assert len(p) == 3 and p[:2] == q
    assert prefix_keys("/v1/embeddings", b'{"input": "x"}') == []
    assert prefix_keys("/v1/completions", b"not json") == []


def test_merge_metrics_labels_every_sample_once_per_family() -> None:
    a = ('# HELP x_total Things\n# TYPE x_total counter\nx_total{kind="a"} 1.0\n'
         "# HELP up Up\n# TYPE up gauge\nup 1.0\n")
    b = ('# HELP x_total Things\n# TYPE x_total counter\nx_total{kind="a"} 2.0\n'
         "# HELP up Up\n# TYPE up gauge\nup 0.0\n")
    merged = merge_metrics([("r1", a), ("r2", b)])
    assert merged.splitlines() == [
        "# HELP x_total Things", "# TYPE x_total counter",
        'x_total{replica="r1",kind="a"} 1.0', 'x_total{replica="r2",kind="a"} 2.0',
        "# HELP up Up", "# TYPE up gauge", 'up{replica="r1"} 1.0', 'up{replica="r2"} 0.0',
    ]
