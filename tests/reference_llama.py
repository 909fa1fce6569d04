"""A plain numpy forward pass of the decoder architectures hologram runs (llama, qwen2, qwen3,
phi2, phi3, gemma2, gemma3), reading weights with the `gguf` package and dequantizing them with
`gguf.quants`, computing in float64: the reference hologram's Rust forward is checked against on
small generated models (``tests/gguf_corpus.py``, ``tests/family_models.py``).

Written from the architectures' definitions (llama.cpp ``src/models/<arch>.cpp``, the HF
modelling code), one function per concern and no shared state with the Rust code."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

NEOX = {"qwen2", "qwen3", "phi2", "phi3", "gemma2", "gemma3"}


def read_gguf(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A file's scalar (and bool array) metadata and its tensors dequantized to float64."""
    r = GGUFReader(str(path))
    meta: dict[str, Any] = {}
    for f in r.fields.values():
        if f.types and f.types[0].name != "ARRAY":
            v = f.parts[f.data[0]]
            meta[f.name] = bytes(v).decode() if f.types[0].name == "STRING" else v[0]
        elif f.types and f.types[0].name == "ARRAY" and f.types[-1].name == "BOOL":
            meta[f.name] = [bool(f.parts[i][0]) for i in f.data]
    w: dict[str, np.ndarray] = {}
    for t in r.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))  # numpy order: (rows, cols)
        w[t.name] = dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float64)
    return meta, w


class DecoderReference:
    """The forward pass of the model in GGUF file `path`, or of `meta` and `weights` (as
    `read_gguf` returns them) when given; `n_ctx` is the context the engine would run with."""

    def __init__(
        self,
        path: str | Path | None = None,
        n_ctx: int = 256,
        meta: dict[str, Any] | None = None,
        weights: dict[str, np.ndarray] | None = None,
    ) -> None:
        if meta is None or weights is None:
            if path is None:
                raise ValueError("DecoderReference needs a path or meta and weights")
            meta, weights = read_gguf(path)
        self.meta, self.w = meta, weights
        a = self.arch = str(self.meta["general.architecture"])
        m = self.meta

        def g(k: str, default: Any = None) -> Any:
            return m.get(f"{a}.{k}", default)

        self.n_embd = int(g("embedding_length"))
        self.n_layer = int(g("block_count"))
        self.n_head = int(g("attention.head_count"))
        self.n_kv = int(g("attention.head_count_kv", self.n_head))
        self.hd = int(g("attention.key_length", self.n_embd // self.n_head))
        self.hdv = int(g("attention.value_length", self.hd))
        eps_key = (
            "attention.layer_norm_epsilon" if a == "phi2" else "attention.layer_norm_rms_epsilon"
        )
        self.eps = float(g(eps_key, 1e-5))
        self.base = float(g("rope.freq_base", 10000.0))
        self.rope_dims = int(g("rope.dimension_count", self.hd))
        self.neox = a in NEOX
        n_ctx_train = int(g("context_length", 2048))
        # RoPE scaling (llama-context.cpp): linear, yarn; attn_factor.
        ty = str(g("rope.scaling.type", "linear"))
        factor = float(g("rope.scaling.factor", 0.0) or 0.0)
        self.freq_scale = 1.0 if factor == 0.0 or ty == "none" else 1.0 / factor
        self.yarn = ty == "yarn"
        self.attn_factor = float(g("rope.scaling.attn_factor", 1.0))
        self.n_ctx_orig = int(g("rope.scaling.original_context_length", n_ctx_train))
        self.freq_factors: np.ndarray | None = self.w.get("rope_freqs.weight")
        if a == "phi3" and "rope_factors_long.weight" in self.w:
            long = n_ctx > self.n_ctx_orig
            self.freq_factors = self.w[
                "rope_factors_long.weight" if long else "rope_factors_short.weight"
            ]
        # Attention variants.
        self.scale = 1.0 / math.sqrt(self.hd)
        self.softcap: float | None = None
        self.final_softcap: float | None = None
        self.windows: list[int | None] = [None] * self.n_layer
        self.layer_base = [self.base] * self.n_layer
        self.layer_freq_scale = [self.freq_scale] * self.n_layer
        window = g("attention.sliding_window")
        if a in ("llama", "phi3") and window is not None:
            self.windows = [int(window)] * self.n_layer
        if a in ("gemma2", "gemma3"):
            self.embd_scale = math.sqrt(self.n_embd)
            if a == "gemma2":
                self.softcap = float(g("attn_logit_softcapping", 50.0))
                self.final_softcap = float(g("final_logit_softcapping", 30.0))
                window = int(window if window is not None else 4096)
                period, base_swa, fs_swa = (
                    2,
                    float(g("rope.freq_base_swa", self.base)),
                    self.freq_scale,
                )
            else:
                fsc = g("final_logit_softcapping")
                self.final_softcap = float(fsc) if fsc else None
                period, base_swa, fs_swa = 6, float(g("rope.freq_base_swa", 10000.0)), 1.0
            if window is not None:
                pat = m.get(f"{a}.attention.sliding_window_pattern", period)
                if isinstance(pat, list):
                    swa = pat
                else:
                    n = int(pat)
                    swa = [n == 0 or i % n < n - 1 for i in range(self.n_layer)]
                for i, s in enumerate(swa):
                    if s:
                        self.windows[i] = int(window)
                        self.layer_base[i] = base_swa
                        self.layer_freq_scale[i] = fs_swa
        else:
            self.embd_scale = 1.0

    # --- blocks ---

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        w, b = self.w[name + ".weight"], self.w.get(name + ".bias")
        if self.arch == "phi2":
            mu = x.mean(-1, keepdims=True)
            y = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + self.eps) * w
        else:
            y = x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w
        return y + b if b is not None else y

    def _rms(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def _rope(self, x: np.ndarray, pos: np.ndarray, base: float, freq_scale: float) -> np.ndarray:
        # x: (T, H, hd); the first rope_dims dimensions of each head rotate.
        d = self.rope_dims
        i = np.arange(d // 2)
        theta_extrap = pos[:, None] * base ** (-2.0 * i / d)[None, :]
        if self.freq_factors is not None:
            theta_extrap = theta_extrap / self.freq_factors[None, :]
        theta = freq_scale * theta_extrap
        mscale = self.attn_factor
        if self.yarn:
            # YaRN (ggml rope_yarn): ramp between interpolation and extrapolation over the
            # correction range; the magnitude correction cancels llama.cpp's own attn factor.
            def corr(n_rot: float) -> float:
                return d * math.log(self.n_ctx_orig / (n_rot * 2 * math.pi)) / (2 * math.log(base))

            lo, hi = max(0.0, math.floor(corr(32.0))), min(d - 1.0, math.ceil(corr(1.0)))
            ramp = 1 - np.clip((i - lo) / max(0.001, hi - lo), 0, 1)
            theta = theta * (1 - ramp) + theta_extrap * ramp
            mscale = self.attn_factor * (1 + 0.1 * math.log(1 / freq_scale))
            scale = 1.0 / freq_scale
            mscale *= (0.1 * math.log(scale) + 1.0 if scale > 1 else 1.0) / (
                1 + 0.1 * math.log(scale)
            )
        c, s = np.cos(theta)[:, None, :] * mscale, np.sin(theta)[:, None, :] * mscale
        out = x.copy()
        if self.neox:
            a, b = x[..., : d // 2], x[..., d // 2 : d]
            out[..., : d // 2] = a * c - b * s
            out[..., d // 2 : d] = a * s + b * c
        else:
            a, b = x[..., 0:d:2], x[..., 1:d:2]
            out[..., 0:d:2] = a * c - b * s
            out[..., 1:d:2] = a * s + b * c
        return out

    def _qkv(self, h: np.ndarray, p: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w = self.w
        nq, nk = self.n_head * self.hd, self.n_kv * self.hd
        if p + "attn_qkv.weight" in w:
            qkv = h @ w[p + "attn_qkv.weight"].T
            if p + "attn_qkv.bias" in w:
                qkv = qkv + w[p + "attn_qkv.bias"]
            q, k, v = qkv[:, :nq], qkv[:, nq : nq + nk], qkv[:, nq + nk :]
        else:
            q, k, v = (h @ w[p + f"attn_{n}.weight"].T for n in "qkv")
            q, k, v = (
                x + w[p + f"attn_{n}.bias"] if p + f"attn_{n}.bias" in w else x
                for x, n in zip((q, k, v), "qkv")
            )
        return q, k, v

    def _attention(self, h: np.ndarray, il: int, pos: np.ndarray) -> np.ndarray:
        w, p, T = self.w, f"blk.{il}.", len(h)
        q, k, v = self._qkv(h, p)
        q = q.reshape(T, self.n_head, self.hd)
        k = k.reshape(T, self.n_kv, self.hd)
        v = v.reshape(T, self.n_kv, self.hdv)
        if p + "attn_q_norm.weight" in w:
            q = self._rms(q, w[p + "attn_q_norm.weight"])
            k = self._rms(k, w[p + "attn_k_norm.weight"])
        q = self._rope(q, pos, self.layer_base[il], self.layer_freq_scale[il])
        k = self._rope(k, pos, self.layer_base[il], self.layer_freq_scale[il])
        g = self.n_head // self.n_kv
        k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
        att = np.einsum("thd,shd->hts", q, k) * self.scale
        if self.softcap is not None:
            att = self.softcap * np.tanh(att / self.softcap)
        dist = pos[:, None] - pos[None, :]
        masked = dist < 0
        if self.windows[il] is not None:
            masked |= dist >= self.windows[il]
        att = np.where(masked[None], -np.inf, att)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", att, v).reshape(T, -1) @ w[p + "attn_output.weight"].T
        return o + w[p + "attn_output.bias"] if p + "attn_output.bias" in w else o

    def _ffn(self, h: np.ndarray, il: int) -> np.ndarray:
        w, p = self.w, f"blk.{il}."
        gelu = self.arch in ("phi2", "gemma2", "gemma3")

        def act(x: np.ndarray) -> np.ndarray:
            if gelu:
                return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
            return x / (1 + np.exp(-x))

        up = h @ w[p + "ffn_up.weight"].T
        if p + "ffn_up.bias" in w:
            up = up + w[p + "ffn_up.bias"]
        if p + "ffn_gate.weight" in w:
            y = act(h @ w[p + "ffn_gate.weight"].T) * up
        elif self.arch == "phi3":  # gate and up fused, gate first
            n = up.shape[-1] // 2
            y = act(up[:, :n]) * up[:, n:]
        else:
            y = act(up)
        y = y @ w[p + "ffn_down.weight"].T
        return y + w[p + "ffn_down.bias"] if p + "ffn_down.bias" in w else y

    def logits(self, ids: list[int]) -> np.ndarray:
        w = self.w
        pos = np.arange(len(ids), dtype=np.float64)
        x = w["token_embd.weight"][ids] * self.embd_scale
        for il in range(self.n_layer):
            p = f"blk.{il}."
            h = self._norm(x, p + "attn_norm")
            a = self._attention(h, il, pos)
            if self.arch == "phi2":  # attention and FFN in parallel on the same input
                x = x + a + self._ffn(h, il)
                continue
            if p + "post_attention_norm.weight" in w:
                a = self._norm(a, p + "post_attention_norm")
            x = x + a
            f = self._ffn(self._norm(x, p + "ffn_norm"), il)
            if p + "post_ffw_norm.weight" in w:
                f = self._norm(f, p + "post_ffw_norm")
            x = x + f
        x = self._norm(x, "output_norm")
        out = x @ w.get("output.weight", w["token_embd.weight"]).T
        if "output.bias" in w:
            out = out + w["output.bias"]
        if self.final_softcap is not None:
            out = self.final_softcap * np.tanh(out / self.final_softcap)
        return out


# The name the llama tests import.
LlamaReference = DecoderReference
