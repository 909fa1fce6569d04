#!/usr/bin/env bash
# Build one release wheel of hologram into dist/, for `pip install` on machines without Rust:
#   bash scripts/build-wheel.sh        # -> dist/hologram-<version>-cp310-abi3-manylinux_2_28_<arch>.whl
#
# - abi3 (pyo3's abi3-py310 feature, rust/py/Cargo.toml): one wheel for CPython 3.10 and newer.
# - manylinux_2_28: maturin links through zig (PyPI `ziglang`) against glibc 2.28's symbol
#   versions, so the wheel built here (any newer glibc, no docker) runs on glibc >= 2.28
#   (RHEL/Alma 8+, Debian 10+, Ubuntu 20.04+); maturin's built-in auditwheel check refuses the
#   build if the library needs anything newer than the tag says.
# - No -C target-cpu=native (nor any target-cpu): the kernels pick AVX2, AVX-512/VNNI or NEON at
#   run time, so the same wheel serves every x86-64 (or aarch64) CPU. The script refuses to
#   build when RUSTFLAGS or a cargo config would change that.
# The build tools (maturin, ziglang) go into build/wheel-env, not into your Python.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MATURIN_VERSION=1.16.0
ZIGLANG_VERSION=0.17.1
OUT=dist

for var in RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS; do
  if [[ "${!var:-}" == *target-cpu* || "${!var:-}" == *target-feature* ]]; then
    echo "build-wheel.sh: $var=${!var} would tie the wheel to one CPU; unset it" >&2
    exit 2
  fi
done
if grep -qs -e 'target-cpu' -e 'target-feature' .cargo/config.toml .cargo/config; then
  echo "build-wheel.sh: .cargo/config sets target-cpu/target-feature; the wheel must not" >&2
  exit 2
fi

ENV=build/wheel-env
if [[ ! -x "$ENV/bin/python" ]]; then
  $PY -m venv "$ENV"
fi
"$ENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  "maturin==$MATURIN_VERSION" "ziglang==$ZIGLANG_VERSION"
# maturin finds zig on PATH; the ziglang package keeps the binary inside its folder.
zig_dir=$("$ENV/bin/python" -c 'import os, ziglang; print(os.path.dirname(ziglang.__file__))')

mkdir -p "$OUT"
rm -f "$OUT"/hologram-*.whl
start=$SECONDS
PATH="$zig_dir:$PATH" "$ENV/bin/maturin" build --release --strip --zig \
  --compatibility manylinux_2_28 --out "$OUT"
wheels=("$OUT"/hologram-*.whl)
if [[ ${#wheels[@]} -ne 1 || ! -f "${wheels[0]}" ]]; then
  echo "build-wheel.sh: expected one wheel in $OUT, found: ${wheels[*]}" >&2
  exit 1
fi
echo "built ${wheels[0]} ($(du -h "${wheels[0]}" | cut -f1), $((SECONDS - start)) s)"
