#!/usr/bin/env bash
# Set up everything and run the whole test suite: Rust (fmt, clippy, cargo test) and Python
# (ruff, mypy, pytest against the real models and a real server on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

bash scripts/setup.sh --test

echo "== cargo fmt / clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --exclude hologram-py -- -D warnings
cargo clippy -p hologram-py -- -D warnings

echo "== cargo test"
# The reader also runs over the malformed-GGUF corpus (RELIABILITY.md G01-G38).
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
$PY tests/gguf_corpus.py "$corpus" >/dev/null
HOLOGRAM_GGUF_CORPUS="$corpus" cargo test --workspace --exclude hologram-py --release

echo "== ruff / mypy"
$PY -m ruff check python tests benches
$PY -m mypy python/hologram
$PY -m mypy.stubtest hologram._core

echo "== pytest"
$PY -m pytest -q tests "$@"
