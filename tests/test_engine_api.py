"""The Python API of hologram.Engine on the real default model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import hologram
import numpy as np
import pytest

PROMPT = "Once upon a time"


def test_metadata_and_properties(smollm2: hologram.Engine) -> None:
    assert smollm2.architecture == "llama"
    assert smollm2.metadata["general.architecture"] == "llama"
    assert smollm2.n_vocab == 49152
    assert smollm2.n_embd == 576
    assert smollm2.n_ctx == 1024
    assert smollm2.n_threads == 2
    assert smollm2.eos_token == "<|im_end|>"
    assert isinstance(smollm2.metadata["tokenizer.ggml.tokens"], str)  # summarised, not 49k items


def test_tokenize_roundtrip(smollm2: hologram.Engine) -> None:
    ids = smollm2.tokenize("Hello, world!")
    assert ids == [19556, 28, 905, 17]  # SmolLM2 adds no BOS
    assert smollm2.detokenize(ids) == "Hello, world!"
    assert smollm2.tokenize("<|im_start|>", parse_special=True) == [1]
    assert len(smollm2.tokenize("<|im_start|>", parse_special=False)) > 1


def test_greedy_is_deterministic_and_matches_logits(smollm2: hologram.Engine) -> None:
    a = smollm2.generate(PROMPT, max_tokens=12, temperature=0.0)
    b = smollm2.generate(PROMPT, max_tokens=12, temperature=0.0)
    assert a.token_ids == b.token_ids and a.text == b.text
    assert a.finish_reason == "length" and a.completion_tokens == 12
    assert a.prompt_tokens == len(smollm2.tokenize(PROMPT))
    logits = smollm2.logits(smollm2.tokenize(PROMPT))
    assert int(np.argmax(logits[-1])) == a.token_ids[0]
    assert smollm2.detokenize(a.token_ids) == a.text


def test_seeded_sampling_is_reproducible(smollm2: hologram.Engine) -> None:
    kw = {"max_tokens": 20, "temperature": 0.9, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
    a = smollm2.generate(PROMPT, seed=7, **kw)
    b = smollm2.generate(PROMPT, seed=7, **kw)
    assert a.token_ids == b.token_ids
    others = {tuple(smollm2.generate(PROMPT, seed=s, **kw).token_ids) for s in range(1, 5)}
    assert len(others) > 1, "different seeds should give different samples"


def test_stream_pieces_join_to_generate_text(smollm2: hologram.Engine) -> None:
    full = smollm2.generate(PROMPT, max_tokens=24, temperature=0.0)
    pieces = list(smollm2.stream(PROMPT, max_tokens=24, temperature=0.0))
    assert "".join(pieces) == full.text
    assert all(p for p in pieces)


def test_stream_steps_and_finish(smollm2: hologram.Engine) -> None:
    s = smollm2.stream(PROMPT, max_tokens=5, temperature=0.0, logprobs=3)
    steps = []
    while (st := s.next_step()) is not None:
        steps.append(st)
    assert len(steps) == 5
    assert s.finish_reason == "length" and s.completion_tokens == 5
    for st in steps:
        assert st.logprob is not None and st.logprob <= 0.0
        assert len(st.top_logprobs) == 3
        lps = [t.logprob for t in st.top_logprobs]
        assert lps == sorted(lps, reverse=True)
        assert st.top_logprobs[0].token == st.token  # greedy picks the top token
        assert abs(st.top_logprobs[0].logprob - st.logprob) < 1e-5
    assert s.next_step() is None


def test_stop_strings(smollm2: hologram.Engine) -> None:
    full = smollm2.generate(PROMPT, max_tokens=30, temperature=0.0).text
    stop = full[10:14]
    assert stop.strip(), full
    cut = smollm2.generate(PROMPT, max_tokens=30, temperature=0.0, stop=[stop, "zzzz-never"])
    assert cut.finish_reason == "stop"
    assert cut.text == full[: full.index(stop)]
    streamed = "".join(smollm2.stream(PROMPT, max_tokens=30, temperature=0.0, stop=stop))
    assert streamed == cut.text


def test_eos_stops_generation(smollm2: hologram.Engine) -> None:
    chat = "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n"
    out = smollm2.generate(chat, max_tokens=200, temperature=0.0)
    assert out.finish_reason == "stop"
    assert "<|im_end|>" not in out.text
    assert out.completion_tokens < 200


def test_context_overflow(smollm2_path: Path) -> None:
    eng = hologram.Engine(smollm2_path, n_ctx=32, n_threads=1)
    with pytest.raises(hologram.ContextOverflowError, match="32"):
        eng.generate("word " * 40, max_tokens=4)
    # Generation stops at the context limit with finish_reason "length".
    out = eng.generate("Hi", max_tokens=100, temperature=0.0, ignore_eos=True)
    assert out.finish_reason == "length"
    assert out.prompt_tokens + out.completion_tokens == 32


def _wait_stats(eng: hologram.Engine, **want: int) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while True:
        st = eng.stats()
        if all(st[k] == v for k, v in want.items()):
            return st
        assert time.monotonic() < deadline, (want, st)
        time.sleep(0.01)


def test_streams_beyond_n_seq_max_queue_and_blocks_are_freed(smollm2_path: Path) -> None:
    eng = hologram.Engine(smollm2_path, n_ctx=64, n_threads=1, n_seq_max=2)
    a = eng.stream("one", max_tokens=40, ignore_eos=True)
    b = eng.stream("two", max_tokens=40, ignore_eos=True)
    assert a.next_step() is not None and b.next_step() is not None
    # A third stream waits for a running slot instead of failing.
    c = eng.stream("three", max_tokens=4, temperature=0.0)
    _wait_stats(eng, running=2, waiting=1)
    a.close()  # cancelling frees a's slot and blocks at the engine's next step
    assert "".join(c)  # runs to the end and frees its sequence
    del b
    assert eng.generate("four", max_tokens=3).completion_tokens <= 3
    st = _wait_stats(eng, running=0, waiting=0)
    assert st["kv_blocks_free"] == st["kv_blocks_total"]
    assert st["steps"] > 0


def test_invalid_arguments(smollm2: hologram.Engine) -> None:
    with pytest.raises(ValueError):
        smollm2.generate([10**7], max_tokens=1)
    with pytest.raises(hologram.InvalidArgumentError):
        smollm2.logits([smollm2.n_vocab])
    with pytest.raises(ValueError):
        smollm2.generate(PROMPT, max_tokens=-1)
    with pytest.raises(ValueError):
        smollm2.generate(PROMPT, top_p=1.5)
    with pytest.raises(ValueError):
        smollm2.generate("", max_tokens=1)
    with pytest.raises(hologram.ModelLoadError):
        hologram.Engine("/nonexistent/model.gguf")


def test_logit_bias_bans_token(smollm2: hologram.Engine) -> None:
    first = smollm2.generate(PROMPT, max_tokens=1, temperature=0.0).token_ids[0]
    out = smollm2.generate(PROMPT, max_tokens=1, temperature=0.0, logit_bias={first: -100.0})
    assert out.token_ids[0] != first


def test_concurrent_generation_releases_the_gil(smollm2: hologram.Engine) -> None:
    ref = smollm2.generate(PROMPT, max_tokens=16, temperature=0.0).text
    results: list[str] = []

    def work() -> None:
        results.append(smollm2.generate(PROMPT, max_tokens=16, temperature=0.0).text)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    # The main thread keeps running Python while the others compute.
    n = 0
    while any(t.is_alive() for t in threads):
        smollm2.tokenize("still responsive")
        n += 1
    for t in threads:
        t.join()
    assert results == [ref] * 3
    assert n > 0


def test_embed_decoder_hidden_states(smollm2: hologram.Engine) -> None:
    ids = smollm2.tokenize("Hello, world!")
    v = smollm2.embed(ids)
    assert v.shape == (576,) and v.dtype == np.float32
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-4
    rows = smollm2.embed(ids, pooling="none", normalize=False)
    assert rows.shape == (len(ids), 576)
    mean = rows.mean(axis=0)
    np.testing.assert_allclose(v, mean / np.linalg.norm(mean), rtol=1e-4, atol=1e-5)


def test_prompt_logprobs_match_full_logits(smollm2: hologram.Engine) -> None:
    """Per-row logprobs computed in the engine equal a float64 log-softmax of the full
    logits matrix (the previous implementation), for the token and its top alternatives."""
    ids = smollm2.tokenize("The quick brown fox jumps over the lazy dog. " * 3)
    rows = smollm2.prompt_logprobs(ids, 5)
    assert len(rows) == len(ids) - 1
    logits = np.asarray(smollm2.logits(ids), dtype=np.float64)
    for i, (lp, alts) in enumerate(rows):
        row = logits[i]
        m = row.max()
        lse = m + np.log(np.exp(row - m).sum())
        assert abs(lp - (row[ids[i + 1]] - lse)) < 1e-4
        best = np.argsort(-row, kind="stable")[:5]
        assert [a.token for a in alts] == [int(j) for j in best]
        for a in alts:
            assert abs(a.logprob - (row[a.token] - lse)) < 1e-4


@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_batched_streams_equal_alone(model: str, request: pytest.FixtureRequest) -> None:
    """Generations running together in the engine's batches give exactly the tokens they
    give alone (every kernel path is batch-invariant), greedy and seeded."""
    eng: hologram.Engine = request.getfixturevalue(model)
    prompts = [f"Story {i}: the lighthouse keeper {w}" for i, w in
               enumerate(["sailed", "slept", "sang", "counted", "painted", "waited"])]
    kw = [{"temperature": 0.0 if i % 2 == 0 else 0.9, "seed": 100 + i} for i in range(6)]
    alone = [eng.generate(p, max_tokens=20, ignore_eos=True, **k).token_ids
             for p, k in zip(prompts, kw, strict=True)]
    streams = [eng.stream(p, max_tokens=20, ignore_eos=True, **k)
               for p, k in zip(prompts, kw, strict=True)]
    together = []
    for s in streams:
        for _ in s:
            pass
        together.append(s.token_ids)
    assert together == alone
