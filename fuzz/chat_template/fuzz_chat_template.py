"""atheris fuzzer for the chat-template renderer (``hologram.heads.chat_template``).

Run from the repository root (see README, Development)::

    python fuzz/chat_template/fuzz_chat_template.py fuzz/work/chat_template \
        fuzz/corpus/chat_template -dict=fuzz/chat_template/jinja.dict \
        -max_len=2048 -timeout=10 -runs=1000000 -artifact_prefix=fuzz/artifacts/chat_template/

The check itself is ``harness.check`` (shared with the regression test): it renders in process
with ``hologram.heads.template_sandbox.render_sandboxed``, the code the render worker runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(
    include=["jinja2.lexer", "jinja2.parser", "jinja2.sandbox", "hologram.heads.template_sandbox"]
):
    import harness


def main() -> None:
    atheris.Setup(sys.argv, harness.check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
