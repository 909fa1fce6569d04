"""The release wheel (``scripts/build-wheel.sh``) installs and serves without a compiler.

The script builds dist/hologram-*.whl (a no-op rebuild when nothing changed); the test installs
it with pip into a fresh virtual environment (no system site-packages) whose PATH has no Rust
toolchain, with binary packages only (so nothing can be compiled on the way), then starts that
environment's ``hologram-serve`` on loopback and gets a chat completion and the chat page."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hologram.models import default_model_path

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

#: The tag build-wheel.sh promises: abi3 for CPython >= 3.10, manylinux glibc 2.28.
WHEEL_NAME = re.compile(r"hologram-[0-9.]+-cp310-abi3-manylinux_2_28_(x86_64|aarch64)\.whl")
MAX_GLIBC = (2, 28)


@pytest.fixture(scope="module")
def wheel() -> Path:
    proc = subprocess.run(["bash", "scripts/build-wheel.sh"], cwd=REPO, capture_output=True,
                          text=True, timeout=3000, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    wheels = sorted((REPO / "dist").glob("hologram-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_is_abi3_manylinux(wheel: Path) -> None:
    assert WHEEL_NAME.fullmatch(wheel.name), wheel.name
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        wheel_meta = z.read(next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode()
    assert "Root-Is-Purelib: false" in wheel_meta
    assert "hologram/_core.abi3.so" in names
    assert "hologram/server/assets/chat.html" in names
    assert "hologram/py.typed" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_extension_needs_no_newer_glibc(wheel: Path, tmp_path: Path) -> None:
    """Independent of maturin's own audit: every versioned glibc symbol the extension imports
    is at most GLIBC_2.28."""
    objdump = shutil.which("objdump")
    assert objdump, "objdump (binutils) is needed to read the extension's symbol versions"
    with zipfile.ZipFile(wheel) as z:
        z.extract("hologram/_core.abi3.so", tmp_path)
    out = subprocess.run([objdump, "-T", str(tmp_path / "hologram" / "_core.abi3.so")],
                         capture_output=True, text=True, check=True).stdout
    versions = {tuple(int(p) for p in v.split(".")) for v in re.findall(r"GLIBC_([0-9.]+)", out)}
    assert versions, "no glibc symbol versions found"
    assert max(versions) <= MAX_GLIBC, sorted(versions)[-3:]


def _no_rust_path() -> str:
    """The system PATH without any directory that holds cargo, rustc or rustup."""
    dirs = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    keep = [d for d in dirs if not any(Path(d, tool).exists()
                                       for tool in ("cargo", "rustc", "rustup"))]
    return os.pathsep.join(keep)


@pytest.fixture(scope="module")
def wheel_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[Path, dict[str, str]]]:
    root = tmp_path_factory.mktemp("wheel-venv")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CARGO", "RUSTUP", "RUST", "PYTHON", "VIRTUAL_ENV", "PYENV"))}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), _no_rust_path()])
    env["CARGO_HOME"] = env["RUSTUP_HOME"] = str(root / "no-rust")
    for tool in ("cargo", "rustc", "rustup", "maturin"):
        assert shutil.which(tool, path=env["PATH"]) is None, tool
    py = str(venv / "bin" / "python")
    # Binary packages only: if anything needed compiling, the install fails instead.
    proc = subprocess.run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--only-binary=:all:", str(wheel)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=1200, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    yield venv, env


def test_installed_package_is_the_wheel(wheel_env: tuple[Path, dict[str, str]]) -> None:
    venv, env = wheel_env
    code = ("import hologram, hologram._core as c, sys; "
            "print(hologram.__file__); print(c.__file__); print(hologram.__version__)")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=venv.parent, env=env,
                         capture_output=True, text=True, check=True, timeout=120).stdout.split()
    site = str(venv / "lib")
    assert out[0].startswith(site) and out[1].startswith(site), out
    assert out[1].endswith("_core.abi3.so"), out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serves_chat_completion_from_the_wheel(wheel_env: tuple[Path, dict[str, str]],
                                               tmp_path: Path) -> None:
    venv, env = wheel_env
    exe = venv / "bin" / "hologram-serve"
    assert exe.is_file()
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [str(exe), "-m", str(default_model_path()), "--port", str(port), "--ctx", "512",
             "--threads", "2"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")
            try:
                if requests.get(base + "/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        model = requests.get(base + "/v1/models", timeout=10).json()["data"][0]["id"]
        r = requests.post(base + "/v1/chat/completions", timeout=120, json={
            "model": model, "max_tokens": 16, "temperature": 0,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"].strip()
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
        assert body["usage"]["completion_tokens"] > 0
        page = requests.get(base + "/", timeout=10)
        assert page.status_code == 200 and "/v1/chat/completions" in page.text
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text(errors="replace")
