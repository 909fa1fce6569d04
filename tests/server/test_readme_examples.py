"""Every Python example of the README, run as written against the default test server. The
only substitution: the port (8000 -> the test server's)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Server

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 3
    assert any("/v1/ws" in b for b in BLOCKS)


@pytest.mark.parametrize("code", BLOCKS, ids=lambda c: c.split("\n", 1)[0][:40])
def test_readme_python_example(code: str, server: Server, tmp_path: Path) -> None:
    code = re.sub(r"(localhost|127\.0\.0\.1):8000", rf"\g<1>:{server.port}", code)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
