"""Regression tests for the security review of hologram-serve (issue 12, items 2, 4, 5, 9, 10
and 11), each on a real server on loopback: Host and Origin with raw headers, a real
WebSocket client, a model file whose chat template is hostile, a real disconnect."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests
import websockets.exceptions
import websockets.sync.client as ws_client
from hologram.models import default_model_path

from .conftest import Server, metric_sum, raw_request, raw_upgrade, start_server

JSON = {"Content-Type": "application/json"}
COMPLETION = json.dumps({"prompt": "Hi", "max_tokens": 1}).encode()


# -- item 2: Host, Origin, Content-Type ------------------------------------------------------


def test_host_must_name_the_server(server: Server) -> None:
    p = server.port
    for host in ("localhost", f"localhost:{p}", "127.0.0.1", f"127.0.0.1:{p}", "[::1]",
                 f"[::1]:{p}", "LOCALHOST", "localhost."):
        status, _, body = raw_request(p, "GET", "/v1/models", {"Host": host})
        assert status == 200, (host, body)
    for host in ("attacker.example", f"attacker.example:{p}", "127.0.0.1.attacker.example",
                 "localhost@attacker.example", "[::1", ""):
        status, _, body = raw_request(p, "GET", "/v1/models", {"Host": host})
        assert status == 400, (host, body)
        assert json.loads(body)["error"]["code"] == "host_not_allowed"
    # The review's request: a POST from a rebound name without a Content-Type.
    status, _, body = raw_request(p, "POST", "/v1/completions",
                                  {"Host": "attacker.example"}, COMPLETION)
    assert status == 400 and b"host_not_allowed" in body


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_json_bodies_need_a_json_content_type(server: Server, content_type: str | None) -> None:
    headers = {"Host": f"127.0.0.1:{server.port}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    status, _, body = raw_request(server.port, "POST", "/v1/completions", headers, COMPLETION)
    assert status == 415, body
    assert json.loads(body)["error"]["code"] == "unsupported_media_type"
    status, _, body = raw_request(server.port, "POST", "/v1/completions",
                                  {**headers, **JSON}, COMPLETION)
    assert status == 200, body
    status, _, body = raw_request(server.port, "POST", "/v1/completions",
                                  {**headers, "Content-Type": "application/json; charset=utf-8"},
                                  COMPLETION)
    assert status == 200, body


def test_foreign_origins_are_refused(server: Server) -> None:
    p = server.port
    host = {"Host": f"127.0.0.1:{p}"}
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{p + 1}",
                   f"https://attacker.example:{p}", f"http://127.0.0.1:{p}.evil.example"):
        for method, path, body in (("POST", "/v1/completions", COMPLETION),
                                   ("GET", "/v1/models", b"")):
            status, headers, answer = raw_request(p, method, path,
                                                  {**host, **JSON, "Origin": origin}, body)
            assert status == 403, (origin, path, answer)
            assert json.loads(answer)["error"]["code"] == "origin_not_allowed"
            assert "access-control-allow-origin" not in headers
        assert raw_upgrade(p, {**host, "Origin": origin}) == 403
    # The server's own pages (same origin) and non-browser clients (no Origin) are fine.
    status, headers, _ = raw_request(p, "POST", "/v1/completions",
                                     {**host, **JSON, "Origin": f"http://127.0.0.1:{p}"},
                                     COMPLETION)
    assert status == 200 and "access-control-allow-origin" not in headers
    assert raw_upgrade(p, host) == 101
    assert raw_upgrade(p, {**host, "Origin": f"http://127.0.0.1:{p}"}) == 101
    assert raw_upgrade(p, {"Host": "attacker.example"}) == 400


def test_cross_site_websocket_with_a_real_client(server: Server) -> None:
    uri = f"ws://127.0.0.1:{server.port}/v1/ws"
    with pytest.raises(websockets.exceptions.InvalidStatus) as info:
        ws_client.connect(uri, origin="http://evil.example")  # type: ignore[arg-type]
    assert info.value.response.status_code == 403
    with ws_client.connect(uri) as ws:
        ws.send(json.dumps({"endpoint": "completions", "prompt": "Hi", "max_tokens": 1}))
        while "done" not in json.loads(ws.recv(timeout=30)):
            pass


# -- item 4: the request budget over HTTP and WebSocket alike ---------------------------------

OVER_BUDGET = [
    # n choices of a chat with max_tokens left to the context: 128 x ~1000 tokens
    ("chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "n": 128}, "n"),
    ("chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "n": 100,
                          "max_completion_tokens": 900}, "n"),
    # many prompts x n
    ("completions", {"prompt": ["Hi"] * 64, "n": 2, "max_tokens": 600}, "n"),
    # echo + logprobs of a long prompt for every choice
    ("completions", {"prompt": "word " * 700, "echo": True, "logprobs": 1, "n": 100,
                     "max_tokens": 1}, "n"),
    # many long embedding inputs (the review's 64 x 510 tokens, times four)
    ("embeddings", {"model": "all-MiniLM-L6-v2", "input": ["word " * 500] * 256}, "input"),
    ("embeddings", {"model": "all-MiniLM-L6-v2", "input": [[1000] * 500] * 2048}, "input"),
]


@pytest.mark.parametrize(("endpoint", "body", "param"), OVER_BUDGET)
def test_request_budget_holds_everywhere(server: Server, endpoint: str, body: dict[str, object],
                                         param: str) -> None:
    """Refused before any compute, over HTTP (streamed or not) and over the WebSocket."""
    variants = [dict(body)] if endpoint == "embeddings" else [
        {**body, "stream": False}, {**body, "stream": True}]
    for b in variants:
        t0 = time.monotonic()
        r = requests.post(f"{server.v1}/{endpoint}", json=b, timeout=60)
        assert r.status_code == 400, r.text[:300]
        err = r.json()["error"]
        assert err["code"] == "request_too_large" and err["param"] == param, err
        assert time.monotonic() - t0 < 5
    with ws_client.connect(f"ws://127.0.0.1:{server.port}/v1/ws") as ws:
        ws.send(json.dumps({"endpoint": endpoint, **body}))
        msg = json.loads(ws.recv(timeout=60))
        assert msg["error"]["code"] == "request_too_large", msg
        assert json.loads(ws.recv(timeout=30)) == {"done": True}
    assert metric_sum(server.base, "hologram_requests_in_flight") == 0


# -- item 10: an abandoned embeddings request stops -------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_abandoned_embeddings_stop_computing(server: Server) -> None:
    """64 inputs of 500 tokens take tens of seconds; the client leaves after half a second and
    the server stops between batches: nothing in flight within 1.5 s, and it then idles."""
    body = {"model": "all-MiniLM-L6-v2", "input": [[1000 + i] * 500 for i in range(64)]}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server.v1 + "/embeddings", json=body, timeout=0.5)
    t0 = time.monotonic()
    while metric_sum(server.base, "hologram_requests_in_flight") != 0:
        assert time.monotonic() - t0 < 1.5, "the embedding still runs 1.5 s after the client left"
        time.sleep(0.05)
    cpu0 = _cpu_seconds(server.proc.pid)
    time.sleep(1.0)
    assert _cpu_seconds(server.proc.pid) - cpu0 < 0.5
    r = requests.post(server.v1 + "/embeddings", json={"input": "still here"}, timeout=60)
    assert r.status_code == 200


# -- a model whose chat template is hostile (items 5, 9), CORS, rename (item 11) ---------------

HOSTILE_TEMPLATE = (
    "{% set c = messages[-1]['content'] %}"
    "{% if c.startswith('LOOP') %}{% set s = 'x' * 20000 %}"
    "{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}"
    "{% elif c.startswith('CENTER') %}{{ ''|center(100000000) }}"
    "{% elif c.startswith('SURROGATE') %}{{ '\\ud800' }}"
    "{% elif c.startswith('RAISE') %}{{ raise_exception('refused: ' ~ c) }}"
    "{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
APP = "http://app.example"


def write_with_template(src: Path, dst: Path, template: str) -> None:
    from gguf_corpus import KV, T_STR, gstr, parse  # tests/ is on sys.path

    g = parse(src.read_bytes())
    g.kvs[g.kv_index("tokenizer.chat_template")] = KV.make(
        "tokenizer.chat_template", T_STR, gstr(template))
    dst.write_bytes(g.assemble())


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, server_logs: Path) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("hostile")
    model = tmp / "hostile.gguf"
    write_with_template(default_model_path(), model, HOSTILE_TEMPLATE)
    srv = start_server(["-m", str(model), "--ctx", "512", "--threads", "2",
                        "--allowed-origins", APP, "--allowed-hosts", "api.example,.corp.example"],
                       server_logs)
    yield srv
    assert srv.stop() == 0, srv.log()[-3000:]


def chat(srv: Server, content: str, **extra: object) -> requests.Response:
    return requests.post(srv.v1 + "/chat/completions", timeout=60, json={
        "messages": [{"role": "user", "content": content}], "max_tokens": 4,
        "temperature": 0, **extra})


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_hostile_template_loop_is_stopped_at_its_budget(hostile: Server) -> None:
    """Nested loops over a 20k-character string (6.2 s in the review, past a 2 s budget): the
    render is stopped at the budget, and the server answers meanwhile."""
    assert chat(hostile, "hello").status_code == 200  # a render worker is up
    worst = 0.0
    done = threading.Event()
    answer: list[requests.Response] = []

    def run() -> None:
        answer.append(chat(hostile, "LOOP"))
        done.set()

    t0 = time.monotonic()
    threading.Thread(target=run).start()
    while not done.wait(0.05):
        t1 = time.monotonic()
        assert requests.get(hostile.base + "/health", timeout=5).status_code == 200
        worst = max(worst, time.monotonic() - t1)
    elapsed = time.monotonic() - t0
    assert answer[0].status_code == 400, answer[0].text
    assert answer[0].json()["error"]["code"] == "chat_template_error"
    assert elapsed < 2.0 + 0.8, elapsed
    assert worst < 0.5
    assert chat(hostile, "hello again").status_code == 200


def test_hostile_template_growth_costs_no_memory(hostile: Server) -> None:
    """``''|center(100000000)`` reached 417 MB in the review: now refused before it is built,
    and rendered outside the server process anyway."""
    before = _peak_rss_kib(hostile.proc.pid)
    t0 = time.monotonic()
    r = chat(hostile, "CENTER")
    assert r.status_code == 400 and r.json()["error"]["code"] == "chat_template_error"
    assert time.monotonic() - t0 < 1.0
    assert _peak_rss_kib(hostile.proc.pid) - before < 32 * 1024


def test_error_logs_hold_no_user_content(hostile: Server) -> None:
    """A request that fails inside the server (the template emits a lone surrogate, which the
    tokenizer cannot take: the UnicodeEncodeError carries the whole prompt) logs its type,
    request id and position; an error message quoting the request stays out of the log."""
    secret = "SECRET-7f3a9c"
    r = requests.post(hostile.v1 + "/chat/completions", timeout=60,
                      headers={"X-Request-Id": "leak-check-1"}, json={
                          "messages": [{"role": "user", "content": "SURROGATE " + secret}],
                          "max_tokens": 2})
    assert r.status_code == 500, r.text
    assert secret not in r.text
    r = requests.post(hostile.v1 + "/chat/completions", timeout=60,
                      headers={"X-Request-Id": "leak-check-2"}, json={
                          "messages": [{"role": "user", "content": "RAISE " + secret}],
                          "max_tokens": 2})
    assert r.status_code == 400 and secret in r.json()["error"]["message"]  # to its sender
    time.sleep(0.2)
    log = hostile.log()
    failure = [line for line in log.splitlines() if "leak-check-1" in line and "ERROR" in line]
    assert failure and "UnicodeEncodeError" in failure[0], log[-2000:]
    assert ".py:" in failure[0]  # where it was raised
    assert '"id": "leak-check-2"' in log
    assert secret not in log


def test_allowed_origins_and_hosts(hostile: Server) -> None:
    p = hostile.port
    for host in ("api.example", f"api.example:{p}", "corp.example", "x.corp.example",
                 "localhost", f"127.0.0.1:{p}"):
        assert raw_request(p, "GET", "/v1/models", {"Host": host})[0] == 200, host
    for host in ("evil.example", "corp.example.evil", "xcorp.example"):
        assert raw_request(p, "GET", "/v1/models", {"Host": host})[0] == 400, host
    host = {"Host": f"127.0.0.1:{p}"}
    # A listed origin: served, with CORS headers; its preflight is answered without a key.
    body = json.dumps({"messages": [{"role": "user", "content": "hello"}],
                       "max_tokens": 1}).encode()
    status, headers, _ = raw_request(p, "POST", "/v1/chat/completions",
                                     {**host, **JSON, "Origin": APP}, body)
    assert status == 200 and headers["access-control-allow-origin"] == APP
    assert "x-request-id" in headers["access-control-expose-headers"].lower()
    status, headers, _ = raw_request(p, "OPTIONS", "/v1/chat/completions", {
        **host, "Origin": APP, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert status == 200, headers
    assert headers["access-control-allow-origin"] == APP
    assert "POST" in headers["access-control-allow-methods"]
    assert "content-type" in headers["access-control-allow-headers"].lower()
    assert raw_upgrade(p, {**host, "Origin": APP}) == 101
    # Any other origin: refused, no CORS headers, preflight included.
    for method in ("POST", "OPTIONS"):
        status, headers, _ = raw_request(p, method, "/v1/chat/completions", {
            **host, **JSON, "Origin": "http://evil.example",
            "Access-Control-Request-Method": "POST"}, body if method == "POST" else b"")
        assert status == 403 and "access-control-allow-origin" not in headers
    assert raw_upgrade(p, {**host, "Origin": "http://evil.example"}) == 403


def test_model_file_replaced_by_rename_is_safe(hostile: Server, tmp_path: Path) -> None:
    """The server keeps the file it loaded open (mapped): replacing the path by a rename
    (``mv new.gguf model.gguf``) leaves it serving the old file; the new one is read at the
    next start (issue 12, item 11)."""
    model = Path(hostile.args[hostile.args.index("-m") + 1])
    before = chat(hostile, "Name a colour.", seed=1).json()["choices"][0]["message"]["content"]
    replacement = tmp_path / "new.gguf"
    replacement.write_bytes(b"GGUF" + b"\0" * 4096)  # not even a model
    shutil.move(replacement, model)  # rename(2) over the served path
    for _ in range(3):
        r = chat(hostile, "Name a colour.", seed=1)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == before
    assert hostile.proc.poll() is None
