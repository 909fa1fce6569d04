"""Kernel golden tests: hologram's dequantize / vec_dot against the `gguf` package's numpy
reference (gguf.quants), for every format and every ISA the CPU offers.

Dequantization must be bit-exact. vec_dot quantizes x to Q8_0/Q8_1/Q8_K first (as ggml does), so
it is compared with a tolerance proportional to sum|w*x| (int8 activation rounding: <= 1/254 of
each block's max per element).
"""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
_core = pytest.importorskip("hologram._core")

from gguf import GGMLQuantizationType as QT
from gguf.constants import GGML_QUANT_SIZES

# Formats with kernels. K-quants dot against Q8_K activations (256-value super-blocks).
TYPES = [
    QT.F32, QT.F16, QT.BF16, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0,
    QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K,
]

# Byte offsets of f16 fields (scale d, min m) that must hold sane values in each block.
F16_FIELDS = {
    QT.Q4_0: (0,),
    QT.Q4_1: (0, 2),
    QT.Q5_0: (0,),
    QT.Q5_1: (0, 2),
    QT.Q8_0: (0,),
    # K-quants: super-block scales (d, dmin); everything else (sub-block scales, quants,
    # masks) is random bytes.
    QT.Q2_K: (80, 82),
    QT.Q3_K: (108,),
    QT.Q4_K: (0, 2),
    QT.Q5_K: (0, 2),
    QT.Q6_K: (208,),
}

ISAS = _core.available_isas()
N_BLOCKS = [1, 3, 7, 33]


def make_data(t: QT, n_blocks: int, rng: np.random.Generator, kind: str = "random") -> tuple[bytes, int]:
    """Random data of `n_blocks` blocks of type t (floats: n_blocks*32 elements); returns
    (bytes, number of elements)."""
    block_size, type_size = GGML_QUANT_SIZES[t]
    if t in (QT.F32, QT.F16, QT.BF16):
        n = n_blocks * 32 + (n_blocks % 5)  # odd lengths for float formats too
        x = rng.uniform(-2, 2, n).astype(np.float32)
        if kind == "zero":
            x[:] = 0
        if t == QT.F32:
            return x.tobytes(), n
        if t == QT.F16:
            return x.astype(np.float16).tobytes(), n
        return (x.view(np.uint32) >> 16).astype(np.uint16).tobytes(), n
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    if kind == "zero":
        blocks[:] = 0
    elif kind == "max":
        blocks[:] = 0xFF
    for off in F16_FIELDS.get(t, ()):
        v = rng.uniform(0.001, 0.05, n_blocks) * rng.choice([-1.0, 1.0], n_blocks)
        if kind == "zero":
            v[:] = 0
        blocks[:, off : off + 2] = v.astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    return blocks.tobytes(), n_blocks * block_size


def reference_dequantize(t: QT, data: bytes, n: int) -> np.ndarray:
    _block_size, type_size = GGML_QUANT_SIZES[t]
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, type_size)
    out = gguf.quants.dequantize(raw, t)
    return np.asarray(out, dtype=np.float32).reshape(-1)[:n]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n_blocks", N_BLOCKS)
@pytest.mark.parametrize("kind", ["random", "zero", "max"])
def test_dequantize_matches_gguf_exactly(isa: str, t: QT, n_blocks: int, kind: str) -> None:
    rng = np.random.default_rng([int(t), n_blocks, len(kind)])
    data, n = make_data(t, n_blocks, rng, kind)
    got = np.asarray(_core.dequantize(int(t), data, n, isa), dtype=np.float32)
    want = reference_dequantize(t, data, n)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n_blocks", N_BLOCKS)
def test_vec_dot_matches_numpy(isa: str, t: QT, n_blocks: int) -> None:
    rng = np.random.default_rng([int(t), n_blocks, 7])
    data, n = make_data(t, n_blocks, rng)
    x = rng.uniform(-1, 1, n).astype(np.float32)
    w = reference_dequantize(t, data, n).astype(np.float64)
    exact = float(w @ x.astype(np.float64))
    mag = float(np.abs(w * x).sum())
    got = _core.vec_dot(int(t), data, x, isa)
    # Float formats dot against f32 directly; quantized ones against Q8 activations.
    rel = 1e-5 if t in (QT.F32, QT.F16, QT.BF16) else 1e-2
    assert abs(got - exact) <= rel * mag + 1e-5, (got, exact, mag)


@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name)
def test_isas_agree_on_vec_dot(t: QT) -> None:
    rng = np.random.default_rng([int(t), 99])
    data, n = make_data(t, 33, rng)
    x = rng.uniform(-1, 1, n).astype(np.float32)
    vals = {isa: _core.vec_dot(int(t), data, x, isa) for isa in ISAS}
    mag = float(np.abs(reference_dequantize(t, data, n) * x).sum())
    ref = vals["scalar"]
    for isa, v in vals.items():
        assert abs(v - ref) <= 1e-5 * mag + 1e-6, (isa, v, ref)


def test_active_isa_is_available() -> None:
    assert "scalar" in ISAS
    assert _core.active_isa() in ISAS


def test_kernel_info_reports_the_active_choices() -> None:
    info = _core.kernel_info()
    assert info["isa"] == _core.active_isa()
    assert info["detected"] in ISAS and info["available"] == ISAS
    assert isinstance(info["packed"], bool) and isinstance(info["vnni"], bool)
    # Formats are listed only where packing runs; VNNI only inside the packed matmul.
    assert bool(info["packed_formats"]) == info["packed"]
    assert not info["vnni"] or info["packed"]
