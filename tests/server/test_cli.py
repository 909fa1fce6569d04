"""The hologram-serve command line: help, start-up failures, bind warning."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import requests

from .conftest import free_port, raw_request, serve_command, start_server


def run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*serve_command(), *args], capture_output=True, text=True, check=False,
                          timeout=timeout)


def test_help_documents_every_flag() -> None:
    out = run(["--help"]).stdout
    for flag in ("--model", "-m", "--alias", "--host", "--port", "--ctx", "--threads",
                 "--parallel", "--api-key", "HOLOGRAM_API_KEY", "--rate-limit", "--max-queue",
                 "--allowed-hosts", "--allowed-origins", "--shutdown-timeout",
                 "--log-level"):
        assert flag in out, flag


def _one_line_failure(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, proc.stderr
    assert needle in errors[0]
    assert "Traceback" not in proc.stderr


def test_missing_model_file(tmp_path: Path) -> None:
    _one_line_failure(run(["-m", str(tmp_path / "nope.gguf"), "--port", str(free_port())]),
                      "not found")


def test_bad_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 60)
    _one_line_failure(run(["-m", str(bad), "--port", str(free_port())]), "bad.gguf")
    text = tmp_path / "text.gguf"
    text.write_text("hello")
    _one_line_failure(run(["-m", str(text), "--port", str(free_port())]), "text.gguf")


def test_port_in_use() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        _one_line_failure(run(["--port", str(port)]), str(port))


def test_alias_and_public_bind_warning(tmp_path: Path) -> None:
    srv = start_server(["--host", "0.0.0.0", "--alias", "my-chat", "--alias", "other",
                        "--ctx", "256"], tmp_path)
    try:
        data = requests.get(srv.v1 + "/models", timeout=10).json()
        # Without -m the aliases go to the default chat model: the first is its public id,
        # its file-name and quick-start ids stay.
        assert [m["id"] for m in data["data"]] == [
            "my-chat", "SmolLM2-135M-Instruct.Q4_1", "other", "hologram-completion-v1",
            "all-MiniLM-L6-v2", "hologram-embedding-v1"]
        r = requests.post(srv.v1 + "/completions", json={
            "model": "other", "prompt": "Hi", "max_tokens": 2}, timeout=60)
        assert r.status_code == 200 and r.json()["model"] == "my-chat"
        assert "without --api-key" in srv.log()
        # Bound to every interface without --allowed-hosts: reached by names it cannot know,
        # so any Host is accepted (Origin is still checked).
        assert raw_request(srv.port, "GET", "/v1/models", {"Host": "gpu-box.lan:8000"})[0] == 200
        status, _, _ = raw_request(srv.port, "GET", "/v1/models", {
            "Host": "gpu-box.lan:8000", "Origin": "http://evil.example"})
        assert status == 403
    finally:
        assert srv.stop() == 0
