"""The malformed-GGUF corpus (RELIABILITY.md §1.4, G01-G38) against ``hologram.Engine``.

Every case must raise ``hologram.ModelLoadError`` (a ``ValueError``); container cases (G01-G31 and
G37_vocab_size_2p31) must raise its subclass ``hologram.GGUFError`` naming the field and the byte
offset. Each load must fail within 1 s; a separate subprocess runs the whole corpus and checks that
peak RSS grows by less than 64 MiB and that the valid model still loads afterwards. The corpus is
built by ``tests/gguf_corpus.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gguf_corpus as gc

try:
    import hologram

    _IMPORT_ERROR: Exception | None = None
except ImportError as exc:  # the extension is not built: the hologram tests fail, not skip
    hologram = None  # type: ignore[assignment]
    _IMPORT_ERROR = exc

TIME_LIMIT_S = 1.0
RSS_LIMIT_KIB = 64 * 1024


@dataclass
class Corpus:
    dir: Path
    paths: dict[str, Path]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    out = tmp_path_factory.mktemp("gguf_corpus")
    return Corpus(out, gc.build_corpus(out))


@pytest.fixture(scope="module")
def hg() -> ModuleType:
    if hologram is None:
        pytest.fail(f"hologram is not importable (build the extension first): {_IMPORT_ERROR}")
    return hologram


def _load(hg: ModuleType, path: Path) -> Any:
    return hg.Engine(str(path), n_ctx=gc.N_CTX)


# ---- the generator itself (needs only numpy and gguf)


def test_valid_model_is_what_it_claims(corpus: Corpus) -> None:
    from gguf import GGUFReader

    r = GGUFReader(corpus.dir / "valid.gguf")
    f = {k: v.contents() for k, v in r.fields.items()}
    assert f["general.architecture"] == "llama"
    assert f["llama.block_count"] == gc.N_LAYER
    assert f["llama.embedding_length"] == gc.N_EMBD
    assert f["llama.attention.head_count"] == gc.N_HEAD
    assert f["llama.attention.head_count_kv"] == gc.N_HEAD_KV
    assert f["llama.rope.dimension_count"] == gc.HEAD_DIM
    assert f["llama.context_length"] == gc.N_CTX
    assert f["tokenizer.ggml.model"] == "gpt2"
    tokens = f["tokenizer.ggml.tokens"]
    assert len(tokens) == gc.N_VOCAB == len(f["tokenizer.ggml.scores"])
    assert len(f["tokenizer.ggml.token_type"]) == gc.N_VOCAB
    assert len(set(tokens)) == len(tokens)
    b2u = gc.bytes_to_unicode()
    assert tokens[:256] == [b2u[b] for b in range(256)]
    vocab = set(tokens)
    for m in f["tokenizer.ggml.merges"]:
        a, b = m.split(" ")
        assert a in vocab and b in vocab and a + b in vocab
    for k in ("bos_token_id", "eos_token_id", "eot_token_id", "padding_token_id"):
        assert 0 <= f[f"tokenizer.ggml.{k}"] < gc.N_VOCAB
    shapes = {t.name: (tuple(int(x) for x in t.shape), t.tensor_type.name) for t in r.tensors}
    for name, (np_shape, tname) in gc.default_tensors(gc.N_VOCAB).items():
        assert shapes[name] == (tuple(reversed(np_shape)), tname)
    assert len(shapes) == 3 + 9 * gc.N_LAYER


def test_valid_model_is_deterministic(tmp_path: Path) -> None:
    a = gc.write_valid_model(tmp_path / "a.gguf", seed=3).read_bytes()
    b = gc.write_valid_model(tmp_path / "b.gguf", seed=3).read_bytes()
    c = gc.write_valid_model(tmp_path / "c.gguf", seed=4).read_bytes()
    assert a == b and a != c


def test_corpus_files_are_distinct_and_cover_g01_to_g38(corpus: Corpus) -> None:
    valid = (corpus.dir / "valid.gguf").read_bytes()
    groups = {c.group for c in gc.CASES}
    assert groups == {f"G{i:02d}" for i in range(1, 39)}
    for case in gc.CASES:
        assert corpus.paths[case.id].read_bytes() != valid, case.id


# ---- the engine


@pytest.mark.parametrize("case", gc.CASES, ids=gc.case_ids())
def test_malformed_file_rejected(hg: ModuleType, corpus: Corpus, case: gc.Case) -> None:
    expected = hg.GGUFError if case.error == gc.GGUF_ERROR else hg.ModelLoadError
    t0 = time.perf_counter()
    with pytest.raises(hg.ModelLoadError) as info:
        _load(hg, corpus.paths[case.id])
    elapsed = time.perf_counter() - t0
    err = info.value
    msg = str(err)
    low = msg.lower()
    assert isinstance(err, ValueError)
    assert isinstance(err, expected), f"{type(err).__name__} is not a {expected.__name__}: {msg}"
    assert elapsed < TIME_LIMIT_S, f"took {elapsed:.2f}s"
    for s in case.contains:
        assert s.lower() in low, f"message lacks {s!r}: {msg}"
    if case.any_of:
        assert any(s.lower() in low for s in case.any_of), (
            f"message names none of {case.any_of}: {msg}"
        )
    if case.error == gc.GGUF_ERROR:
        assert "offset" in low, f"message lacks the byte offset: {msg}"


_RUNNER = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    import hologram

    d = Path(sys.argv[1])
    files = json.loads(sys.argv[2])
    n_ctx = int(sys.argv[3])

    def maxrss_kib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    # Warm up one-time lazy state (thread pool, ISA detection) with a rejected file.
    try:
        hologram.Engine(str(d / files[0][1]), n_ctx=n_ctx)
    except hologram.ModelLoadError:
        pass
    base = maxrss_kib()
    results = []
    for case_id, name in files:
        t0 = time.perf_counter()
        try:
            hologram.Engine(str(d / name), n_ctx=n_ctx)
            outcome = "accepted"
        except hologram.ModelLoadError as e:
            outcome = type(e).__name__
        except BaseException as e:  # PanicException derives from BaseException
            outcome = "unexpected " + type(e).__name__ + ": " + str(e)[:300]
        results.append([case_id, outcome, time.perf_counter() - t0, maxrss_kib() - base])
    peak = maxrss_kib() - base
    engine = hologram.Engine(str(d / "valid.gguf"), n_ctx=n_ctx)
    print(json.dumps({"results": results, "peak_growth_kib": peak,
                      "valid_loaded": engine is not None}))
    """
)


def test_whole_corpus_in_one_process_memory_time_and_recovery(
    hg: ModuleType, corpus: Corpus
) -> None:
    files = [[c.id, c.filename()] for c in gc.CASES]
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(corpus.dir), json.dumps(files), str(gc.N_CTX)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"corpus runner died (returncode {proc.returncode}: a signal means a crash/abort)\n"
        f"stderr:\n{proc.stderr[-4000:]}"
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = [r for r in report["results"] if r[1] == "accepted" or r[1].startswith("unexpected")]
    assert not bad, f"cases not rejected cleanly: {bad}"
    slow = [r for r in report["results"] if r[2] >= TIME_LIMIT_S]
    assert not slow, f"cases slower than {TIME_LIMIT_S}s: {slow}"
    first_over = next((r for r in report["results"] if r[3] >= RSS_LIMIT_KIB), None)
    assert report["peak_growth_kib"] < RSS_LIMIT_KIB, (
        f"peak RSS grew by {report['peak_growth_kib']} KiB; first case over the limit: {first_over}"
    )
    assert report["valid_loaded"]


@pytest.mark.parametrize("name", ["valid.gguf", "valid_spm.gguf"])
def test_valid_model_loads_after_corpus(hg: ModuleType, corpus: Corpus, name: str) -> None:
    engine = _load(hg, corpus.dir / name)
    assert engine is not None
