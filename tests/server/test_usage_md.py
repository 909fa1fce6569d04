"""Every example of USAGE.md, run as written. The only substitutions: the port (8000 / 3000 ->
the test server's free port), ``embedding_model_id`` / ``MODEL`` / ``EMBEDDING_MODEL`` -> the
served model id, ``model.gguf`` -> a symlink to the default model in the working directory."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from hologram.models import default_model_path

from .conftest import USAGE, Server, free_port, wait_healthy


def blocks(lang: str) -> list[str]:
    text = USAGE.read_text()
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.DOTALL)


def test_usage_has_examples() -> None:
    assert len(blocks("python")) == 3 and len(blocks("bash")) == 2


def _with_port(code: str, port: int) -> str:
    return code.replace("localhost:8000", f"localhost:{port}")


def test_openai_client_example(server: Server, embedding_model_id: str) -> None:
    code = blocks("python")[0]
    assert "from openai import OpenAI" in code
    code = f"embedding_model_id = {embedding_model_id!r}\n" + _with_port(code, server.port)
    # The example's last call asks all-MiniLM-L6-v2 for two 128-dimension vectors.
    code += "\nassert len(e.data) == 2 and len(e.data[0].embedding) == 128\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "prompt_tokens=" in proc.stdout


def test_plain_http_streaming_example(server: Server) -> None:
    code = blocks("python")[1]
    assert "requests.post" in code
    proc = subprocess.run([sys.executable, "-c", _with_port(code, server.port)],
                          capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "model.gguf").symlink_to(default_model_path())
    return tmp_path


def test_python_api_example(model_dir: Path) -> None:
    code = blocks("python")[2]
    assert "hologram.Engine" in code
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          timeout=300, cwd=model_dir)
    assert proc.returncode == 0, proc.stderr


def _curl_commands() -> list[str]:
    joined = blocks("bash")[0].replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip().startswith("curl")]


def test_curl_examples(server: Server, model_id: str, embedding_model_id: str) -> None:
    cmds = _curl_commands()
    assert len(cmds) == 6
    outputs = []
    for cmd in cmds:
        cmd = _with_port(cmd, server.port)
        cmd = cmd.replace('"EMBEDDING_MODEL"', f'"{embedding_model_id}"')
        cmd = cmd.replace('"MODEL"', f'"{model_id}"')
        proc = subprocess.run(["bash", "-c", cmd + " --fail-with-body -sS"], check=False,
                              capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, (cmd, proc.stdout, proc.stderr)
        outputs.append(proc.stdout)
    health, models, completion, embedding, stream, metrics = outputs
    assert '"ok"' in health
    assert model_id in models and embedding_model_id in models
    assert len(__import__("json").loads(embedding)["data"][0]["embedding"]) == 384
    assert '"text_completion"' in completion
    assert '"embedding"' in embedding
    assert stream.rstrip().endswith("data: [DONE]") and '"role":"assistant"' in stream
    assert "hologram_requests_total" in metrics


def _cli_commands() -> list[str]:
    out = []
    for line in blocks("bash")[1].splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("hologram-serve"):
            out.append(line)
    return out


def test_command_line_examples(model_dir: Path) -> None:
    cmds = _cli_commands()
    assert len(cmds) == 3
    if not any(Path(p, "hologram-serve").exists() for p in os.environ["PATH"].split(":")):
        pytest.skip("hologram-serve console script is not installed")
    for cmd in cmds:
        port = free_port()
        if re.search(r"--port \d+", cmd):
            cmd = re.sub(r"--port \d+", f"--port {port}", cmd)
        else:
            cmd += f" --port {port}"
        env = {**os.environ, "KEY": "usage-md-key"}
        log = model_dir / f"serve-{port}.log"
        proc = subprocess.Popen(["bash", "-c", "exec " + cmd], cwd=model_dir, env=env,
                                stdout=subprocess.DEVNULL, stderr=log.open("wb"))
        srv = Server(proc, port, log)
        try:
            wait_healthy(srv, 120)
            headers = {"Authorization": "Bearer usage-md-key"} if "KEY" in cmd else {}
            r = requests.get(srv.v1 + "/models", headers=headers, timeout=10)
            assert r.status_code == 200, r.text
        finally:
            proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            code = proc.wait(60)
        assert code == 0, (cmd, srv.log()[-2000:])
        assert time.monotonic() - t0 < 30


# -- hologram's original quick start: the hologram-*-v1 ids ----------------------------------------

#: The quick-start calls exactly as the issue and USAGE.md quote them.
QUICKSTART_CALLS = (
    'client.embeddings.create(input="Hello, world!", model="hologram-embedding-v1")',
    ('client.completions.create(model="hologram-completion-v1", prompt="Once upon a time", '
    'max_tokens=50)'),
)
#: The same through curl, as README's "Model ids" section has them.
QUICKSTART_CURL = (
    ('curl http://localhost:8000/v1/completions -H "Content-Type: application/json" -d '
    '\'{"model": "hologram-completion-v1", "prompt": "Once upon a time", "max_tokens": 50}\''),
    ('curl http://localhost:8000/v1/embeddings -H "Content-Type: application/json" -d '
    '\'{"input": "Hello, world!", "model": "hologram-embedding-v1"}\''),
)


def test_quickstart_ids_python(server: Server) -> None:
    usage = " ".join(USAGE.read_text().split())  # USAGE.md wraps its prose
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for call in QUICKSTART_CALLS:
        assert call in usage and call in readme
    code = ("from openai import OpenAI\n"
            f'client = OpenAI(base_url="http://localhost:{server.port}/v1", api_key="unused")\n'
            f"e = {QUICKSTART_CALLS[0]}\n"
            f"r = {QUICKSTART_CALLS[1]}\n"
            "assert len(e.data[0].embedding) == 384 and e.model == 'all-MiniLM-L6-v2'\n"
            "assert r.choices[0].text and 0 < r.usage.completion_tokens <= 50\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_quickstart_ids_curl(server: Server) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    out = []
    for cmd in QUICKSTART_CURL:
        assert cmd in readme
        run = _with_port(cmd, server.port) + " --fail-with-body -sS"
        proc = subprocess.run(["bash", "-c", run], capture_output=True, text=True, check=False,
                              timeout=300)
        assert proc.returncode == 0, (run, proc.stdout, proc.stderr)
        out.append(json.loads(proc.stdout))
    completion, embedding = out
    assert completion["object"] == "text_completion" and completion["choices"][0]["text"]
    assert len(embedding["data"][0]["embedding"]) == 384
