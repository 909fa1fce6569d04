"""A plain numpy forward pass of the llama architecture, reading weights with the `gguf`
package and dequantizing them with `gguf.quants`: the reference hologram's Rust forward is
checked against on small generated models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


class LlamaReference:
    def __init__(self, path: str | Path) -> None:
        r = GGUFReader(str(path))
        self.meta: dict[str, Any] = {}
        for f in r.fields.values():
            if f.types and f.types[0].name != "ARRAY":
                v = f.parts[f.data[0]]
                self.meta[f.name] = bytes(v).decode() if f.types[0].name == "STRING" else v[0]
        self.w: dict[str, np.ndarray] = {}
        for t in r.tensors:
            shape = tuple(int(d) for d in reversed(t.shape))  # numpy order: (rows, cols)
            self.w[t.name] = dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float64)
        a = "llama"
        self.n_embd = int(self.meta[f"{a}.embedding_length"])
        self.n_layer = int(self.meta[f"{a}.block_count"])
        self.n_head = int(self.meta[f"{a}.attention.head_count"])
        self.n_kv = int(self.meta.get(f"{a}.attention.head_count_kv", self.n_head))
        self.hd = self.n_embd // self.n_head
        self.eps = float(self.meta.get(f"{a}.attention.layer_norm_rms_epsilon", 1e-5))
        self.base = float(self.meta.get(f"{a}.rope.freq_base", 10000.0))
        self.rope_dims = int(self.meta.get(f"{a}.rope.dimension_count", self.hd))

    def _rms(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def _rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        # x: (T, H, hd); NORM layout rotates adjacent pairs.
        d = self.rope_dims
        inv = self.base ** (-np.arange(0, d, 2) / d)
        ang = pos[:, None] * inv[None, :]  # (T, d/2)
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        out = x.copy()
        a, b = x[..., 0:d:2], x[..., 1:d:2]
        out[..., 0:d:2] = a * c - b * s
        out[..., 1:d:2] = a * s + b * c
        return out

    def logits(self, ids: list[int]) -> np.ndarray:
        w = self.w
        T = len(ids)
        pos = np.arange(T, dtype=np.float64)
        x = w["token_embd.weight"][ids]
        mask = np.triu(np.full((T, T), -np.inf), 1)
        g = self.n_head // self.n_kv
        for i in range(self.n_layer):
            p = f"blk.{i}."
            h = self._rms(x, w[p + "attn_norm.weight"])
            q = (h @ w[p + "attn_q.weight"].T).reshape(T, self.n_head, self.hd)
            k = (h @ w[p + "attn_k.weight"].T).reshape(T, self.n_kv, self.hd)
            v = (h @ w[p + "attn_v.weight"].T).reshape(T, self.n_kv, self.hd)
            q, k = self._rope(q, pos), self._rope(k, pos)
            k = np.repeat(k, g, axis=1)
            v = np.repeat(v, g, axis=1)
            att = np.einsum("thd,shd->hts", q, k) / np.sqrt(self.hd) + mask
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            o = np.einsum("hts,shd->thd", att, v).reshape(T, -1)
            x = x + o @ w[p + "attn_output.weight"].T
            h = self._rms(x, w[p + "ffn_norm.weight"])
            gate = h @ w[p + "ffn_gate.weight"].T
            up = h @ w[p + "ffn_up.weight"].T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
        x = self._rms(x, w["output_norm.weight"])
        out_w = w.get("output.weight", w["token_embd.weight"])
        return x @ out_w.T
