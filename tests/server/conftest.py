"""Fixtures for the server tests: real ``hologram-serve`` subprocesses on free loopback ports,
serving the real default model, and validators for the official OpenAI schemas."""

from __future__ import annotations

import copy
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
SPEC = DATA / "spec" / "openai-openapi.yaml"  # openai/openai-openapi (MIT, LICENSE beside it)
USAGE = DATA / "USAGE.md"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_command() -> list[str]:
    """The installed console script (the one next to this interpreter, not a pyenv-style shim,
    so that signals reach the server itself), else the same entry point via ``-m``."""
    exe = Path(sys.executable).parent / "hologram-serve"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("hologram-serve")
    return [found] if found else [sys.executable, "-m", "hologram.server.cli"]


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def v1(self) -> str:
        return self.base + "/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def start_server(
    args: list[str], log_dir: Path, *, port: int | None = None, wait: bool = True,
    timeout: float = 120.0, cwd: Path | None = None,
) -> Server:
    port = port or free_port()
    log_path = log_dir / f"server-{port}.log"
    cmd = [*serve_command(), "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log_path.open("wb"),
                            cwd=cwd)
    server = Server(proc, port, log_path, args)
    if wait:
        wait_healthy(server, timeout)
    return server


def wait_healthy(server: Server, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.log()}")
        try:
            if requests.get(server.base + "/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    server.proc.kill()
    raise RuntimeError(f"server not healthy after {timeout} s:\n{server.log()}")


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def server(server_logs: Path) -> Iterator[Server]:
    """The default server: default model, no key, 8 running sequences, ctx 1024."""
    srv = start_server(["--ctx", "1024", "--parallel", "8", "--threads", "2"], server_logs)
    yield srv
    code = srv.stop()
    assert code == 0, f"server exit code {code} after SIGTERM:\n{srv.log()[-3000:]}"


API_KEYS = ("test-key-one", "test-key-two", "test-key-three")
RATE_LIMIT = 40


@pytest.fixture(scope="session")
def guarded(server_logs: Path) -> Iterator[Server]:
    """A second server with API keys, a rate limit, one slot and a one-deep queue."""
    srv = start_server(
        ["--ctx", "512", "--parallel", "1", "--max-queue", "1", "--threads", "2",
         "--api-key", ",".join(API_KEYS), "--rate-limit", str(RATE_LIMIT)],
        server_logs,
    )
    yield srv
    code = srv.stop()
    assert code == 0, f"server exit code {code} after SIGTERM:\n{srv.log()[-3000:]}"


class _SourceAddress(HTTPAdapter):
    def __init__(self, address: str) -> None:
        self._address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self._address, 0)
        super().init_poolmanager(*args, **kwargs)


def session_from(address: str) -> requests.Session:
    """A requests session whose connections come from ``address`` (any 127.x.y.z on Linux
    is loopback): the server sees another client address, with its own rate-limit
    allowance."""
    s = requests.Session()
    s.mount("http://", _SourceAddress(address))
    return s


@pytest.fixture(scope="session")
def model_id(server: Server) -> str:
    data = requests.get(server.v1 + "/models", timeout=10).json()
    return str(data["data"][0]["id"])


#: The default embedding model (all-MiniLM-L6-v2, converted by scripts/setup.sh).
EMBEDDING_MODEL_ID = "all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def embedding_model_id(server: Server) -> str:
    data = requests.get(server.v1 + "/models", timeout=10).json()
    ids = [m["id"] for m in data["data"]]
    assert EMBEDDING_MODEL_ID in ids, f"the default embedding model is not served: {ids}"
    return EMBEDDING_MODEL_ID


# -- OpenAI schema validation ---------------------------------------------------------------


def _fix_nullable(node: Any) -> Any:
    """OpenAPI 3.0 ``nullable: true`` (still used in places in the 3.1 spec) -> JSON Schema."""
    if isinstance(node, dict):
        node = {k: _fix_nullable(v) for k, v in node.items()}
        if node.pop("nullable", False):
            if "$ref" in node:
                ref = {"$ref": node.pop("$ref")}
                node = {"anyOf": [ref, {"type": "null"}], **node}
            elif isinstance(node.get("type"), str):
                node["type"] = [node["type"], "null"]
                if "enum" in node:
                    node["enum"] = [*node["enum"], None]
            elif "type" not in node:
                node = {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_fix_nullable(v) for v in node]
    return node


class SchemaValidator:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.components = _fix_nullable(spec["components"])
        # A streamed completion chunk reuses CreateCompletionResponse, whose finish_reason is
        # not nullable; OpenAI (and every compatible server) sends null until the last chunk.
        chunk = copy.deepcopy(self.components["schemas"]["CreateCompletionResponse"])
        fr = chunk["properties"]["choices"]["items"]["properties"]["finish_reason"]
        fr["type"] = [fr["type"], "null"]
        fr["enum"] = [*fr["enum"], None]
        self.components["schemas"]["_CompletionChunk"] = chunk
        # With echo + logprobs the first prompt token has no logprob: OpenAI sends null there
        # (token_logprobs[0] and top_logprobs[0]); the schema's item types do not allow it.
        for schema in (self.components["schemas"]["CreateCompletionResponse"], chunk):
            lp = schema["properties"]["choices"]["items"]["properties"]["logprobs"]["anyOf"][0]
            for key in ("token_logprobs", "top_logprobs"):
                items = lp["properties"][key]["items"]
                lp["properties"][key]["items"] = {"anyOf": [items, {"type": "null"}]}

    def validate(self, name: str, instance: Any) -> None:
        import jsonschema  # type: ignore[import-untyped]

        schema = {"$ref": f"#/components/schemas/{name}", "components": self.components}
        jsonschema.Draft202012Validator(schema).validate(instance)


@pytest.fixture(scope="session")
def openai_schema() -> SchemaValidator:
    import yaml  # type: ignore[import-untyped]

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC.open("rb") as f:
        spec = yaml.load(f, Loader=loader)
    return SchemaValidator(spec)


def metric_values(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = float(sample.value)
    return out


def metric_sum(base: str, name: str, headers: dict[str, str] | None = None) -> float:
    text = requests.get(base + "/metrics", headers=headers or {}, timeout=10).text
    return sum(metric_values(text, name).values())


def sse_events(resp: requests.Response) -> list[bytes]:
    """The data payloads of an SSE response, in order (``b"[DONE]"`` included)."""
    out: list[bytes] = []
    for line in resp.iter_lines():
        if not line:
            continue
        assert line.startswith(b"data: "), line
        out.append(line[len(b"data: "):])
    return out


# -- raw HTTP ---------------------------------------------------------------------------------


def raw_request(port: int, method: str, path: str, headers: dict[str, str],
                body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send exactly these headers (no Host is added) and read the whole answer."""
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()),
             "Connection: close"]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    out = {}
    for line in header_lines:
        k, _, v = line.partition(":")
        out[k.strip().lower()] = v.strip()
    return status, out, rest


def raw_upgrade(port: int, headers: dict[str, str]) -> int:
    """A WebSocket upgrade request with exactly these headers; the status answered."""
    base = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    lines = ["GET /v1/ws HTTP/1.1", *(f"{k}: {v}" for k, v in {**base, **headers}.items())]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        first = s.recv(4096).split(b"\r\n", 1)[0]
    return int(first.split()[1])
