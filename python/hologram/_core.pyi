"""Type stubs for the Rust extension module ``hologram._core``."""

from collections.abc import Iterator, Sequence
from os import PathLike
from typing import Any, TypedDict, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "ContextOverflowError",
    "Engine",
    "GGUFError",
    "GenerationResult",
    "HologramError",
    "InternalError",
    "InvalidArgumentError",
    "KVCacheFullError",
    "ModelLoadError",
    "Step",
    "Stream",
    "TopLogprob",
    "UnsupportedModelError",
    "__version__",
    "active_isa",
    "available_isas",
    "dequantize",
    "kernel_info",
    "sampling_defaults",
    "vec_dot",
]

__version__: str

class HologramError(Exception): ...
class ModelLoadError(HologramError, ValueError): ...
class GGUFError(ModelLoadError): ...
class UnsupportedModelError(ModelLoadError): ...
class ContextOverflowError(HologramError, ValueError): ...
class KVCacheFullError(HologramError): ...
class InvalidArgumentError(HologramError, ValueError): ...
class InternalError(HologramError): ...

@final
class TopLogprob:
    token: int
    text: str
    bytes: bytes
    logprob: float

@final
class Step:
    """One generated token."""

    token: int
    #: Text this step releases (may be "" while a UTF-8 character or stop string is pending,
    #: or hold text of earlier tokens released late).
    text: str
    #: The token's own bytes, as the vocabulary has them.
    token_bytes: bytes
    #: log-probability of the chosen token under the model's (unmodified) distribution;
    #: None unless logprobs were asked for.
    logprob: float | None
    top_logprobs: list[TopLogprob]
    #: The end-of-generation step that only flushes held-back text: ``token`` is the
    #: end-of-generation token, not a generated one (not counted in completion_tokens).
    flush: bool

@final
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    steps: list[Step]  # filled only when logprobs was set

@final
class Stream:
    """A generation submitted to the model's engine thread, which batches it with every other
    running one. Iterating yields text pieces; ``next_step`` waits for the next token with its
    logprobs; ``poll`` takes what has arrived without waiting (for event loops: see
    ``Engine.notify_fd``). Closing (or dropping) it cancels the generation: its KV blocks are
    freed at the engine's next step. Methods may be called from several threads."""

    #: Request id, as reported by ``Engine.take_ready``.
    id: int
    prompt_tokens: int
    completion_tokens: int
    #: None while running; "stop" or "length" when finished.
    finish_reason: str | None
    token_ids: list[int]
    #: Prompt tokens served from the prefix cache (known once finished).
    cached_tokens: int
    #: True once the generation has ended (or was closed) and every step has been read.
    done: bool
    def __iter__(self) -> Iterator[str]: ...
    def __next__(self) -> str: ...
    def next_step(self, timeout: float | None = None) -> Step | None:
        """The next token (waits with the GIL released, at most ``timeout`` seconds: else
        TimeoutError). None when the generation has finished; the remaining held-back text, if
        any, is flushed by the last Step. Raises the engine's error if it failed."""
    def poll(self) -> list[Step]:
        """Every step that has arrived, without waiting (possibly none). Raises the engine's
        error once the steps before it have been returned."""
    def close(self) -> None: ...
    def __enter__(self) -> Stream: ...
    def __exit__(self, *args: object) -> None: ...

@final
class Engine:
    def __new__(
        cls,
        path: str | PathLike[str],
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_batch: int = 512,
        n_seq_max: int = 16,
        kv_tokens: int | None = None,
        step_tokens: int = 256,
    ) -> Engine:
        """Load a GGUF model. A decoder gets its own engine thread, which runs up to
        ``n_seq_max`` generations at once in one batch per step (continuous batching), each
        step at most ``step_tokens`` rows (prompts are read in chunks). ``kv_tokens`` sizes the
        KV block pool shared by all sequences (default ``n_ctx * min(n_seq_max, 4)``, never
        less than one context); when it runs out the newest sequence is preempted and
        recomputed later. ``n_batch`` is the most rows of one forward pass."""
    @property
    def path(self) -> str: ...
    @property
    def architecture(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def n_ctx(self) -> int: ...
    @property
    def n_ctx_train(self) -> int: ...
    @property
    def n_vocab(self) -> int: ...
    @property
    def n_embd(self) -> int: ...
    @property
    def n_threads(self) -> int: ...
    @property
    def n_seq_max(self) -> int: ...
    @property
    def kv_tokens(self) -> int:
        """Token slots of the KV block pool (0 for embedding models)."""
    @property
    def notify_fd(self) -> int | None:
        """A file descriptor that becomes readable when some stream has new steps: read and
        discard its bytes, then call ``take_ready``. None for embedding models."""
    def take_ready(self) -> list[int]:
        """Ids of the streams that received steps since the last call (may repeat)."""
    def stats(self) -> dict[str, Any]:
        """The engine thread's gauges and counters: running, waiting, kv_blocks_total,
        kv_blocks_free (free or cached-and-unused), kv_blocks_cached, prefix_hit_tokens,
        kv_block_tokens, preemptions, steps, prompt_rows, decode_rows,
        batch_buckets (upper bounds) and batch_hist (steps per bucket, one more slot for larger
        batches). Empty for embedding models."""
    @property
    def sampling_defaults(self) -> dict[str, float | int]:
        """The values ``generate``/``stream`` use for settings left None: the file's
        ``general.sampling.*`` values (temp, top_k, top_p, min_p, penalty_repeat,
        penalty_last_n), else ``sampling_defaults()`` (llama.cpp's)."""
    @property
    def sampling_from_file(self) -> list[str]:
        """The names in ``sampling_defaults`` whose value comes from the file."""
    @property
    def metadata(self) -> dict[str, Any]:
        """GGUF metadata (large arrays such as the vocabulary are summarised)."""
    @property
    def chat_template(self) -> str | None: ...
    @property
    def bos_token(self) -> str | None: ...
    @property
    def eos_token(self) -> str | None: ...
    @property
    def bos_id(self) -> int | None: ...
    @property
    def eos_id(self) -> int | None: ...
    @property
    def add_bos(self) -> bool: ...
    @property
    def is_embedding_model(self) -> bool: ...
    def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = False
    ) -> list[int]: ...
    def tokenize_segments(
        self, segments: Sequence[tuple[str, bool]], add_special: bool = True
    ) -> list[int]:
        """Tokenize the concatenation of ``(text, parse_special)`` segments: control tokens are
        recognised only wholly inside segments that allow them."""
    def control_texts_in(self, text: str) -> list[str]:
        """Control-token texts occurring in ``text``, longest first."""
    def detokenize(self, ids: Sequence[int]) -> str: ...
    def token_to_bytes(self, id: int) -> bytes: ...
    def is_eog(self, id: int) -> bool: ...
    def generate(
        self,
        prompt: str | Sequence[int],
        max_tokens: int = 128,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        repeat_penalty: float | None = None,
        repeat_last_n: int | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        logit_bias: dict[int, float] | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        logprobs: int | None = None,
        add_special: bool = True,
        parse_special: bool = True,
        ignore_eos: bool = False,
        grammar: str | None = None,
    ) -> GenerationResult:
        """Generate from ``prompt`` (text, tokenized with ``add_special``/``parse_special``, or
        token ids fed as given). temperature 0 is greedy; settings left None take
        ``self.sampling_defaults`` (the file's ``general.sampling.*`` values, else
        ``sampling_defaults()``). ``logprobs=k`` fills
        ``GenerationResult.steps`` with each token's logprob and the top k alternatives.
        ``grammar`` (structured output, see ``hologram.constraints``) restricts the output to
        a grammar: disallowed tokens are removed before sampling (logprobs stay the model's
        own), the generation ends ("stop") when the grammar is complete, and an
        end-of-generation token is allowed only where the grammar accepts. An invalid grammar
        raises InvalidArgumentError naming the problem.
        Raises ContextOverflowError when the prompt does not fit in n_ctx."""
    def stream(
        self,
        prompt: str | Sequence[int],
        max_tokens: int = 128,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        repeat_penalty: float | None = None,
        repeat_last_n: int | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        logit_bias: dict[int, float] | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        logprobs: int | None = None,
        add_special: bool = True,
        parse_special: bool = True,
        ignore_eos: bool = False,
        group: int | None = None,
        grammar: str | None = None,
    ) -> Stream:
        """Like generate, but returns a Stream at once (the engine thread runs it). Streams
        given the same ``group`` share their prompt: it is read once, by the first admitted,
        and the others start from its cached KV blocks."""
    def check_grammar(self, grammar: str) -> None:
        """Compile ``grammar`` (structured output) without generating: raises
        InvalidArgumentError naming what is wrong. The compiled grammar is kept, so a
        generation with it that follows does not compile it again."""
    def prompt_logprobs(
        self, ids: Sequence[int], top: int = 0
    ) -> list[tuple[float, list[TopLogprob]]]:
        """For each token of ``ids`` after the first: its log-probability given the tokens
        before it and the ``top`` most likely alternatives there (computed in the engine a few
        rows at a time: no prompt x vocabulary array)."""
    def logits(self, ids: Sequence[int]) -> npt.NDArray[np.float32]:
        """Logits for every position of ``ids`` (fresh sequence), shape (len(ids), n_vocab)."""
    @property
    def default_pooling(self) -> str:
        """The pooling ``embed`` uses when none is given: the embedding model's own (from the
        file), else "mean"."""
    def embed(
        self, ids: Sequence[int], pooling: str | None = None, normalize: bool = True
    ) -> npt.NDArray[np.float32]:
        """One embedding vector for ``ids``: an encoder model's pooled output, or a decoder's
        final hidden states (after the output norm), pooled with ``pooling`` ("mean" | "cls" |
        "last" | "none" -> (n, n_embd)); L2-normalised when ``normalize``."""
    def embed_batch(
        self, batch: Sequence[Sequence[int]], pooling: str | None = None, normalize: bool = True
    ) -> npt.NDArray[np.float32]:
        """Vectors for many token sequences, (len(batch), n_embd); an encoder runs the whole
        batch in one pass."""

def sampling_defaults() -> dict[str, float | int]:
    """The sampling values used when a request leaves them unset (llama.cpp's defaults):
    temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, presence_penalty,
    frequency_penalty."""

def dequantize(ggml_type: int, data: bytes, n: int, isa: str | None = None) -> npt.NDArray[np.float32]:
    """Dequantize ``n`` values of GGML type ``ggml_type`` from ``data`` with the kernel path
    ``isa`` ("scalar" | "avx2" | "avx512" | "neon"; None = the active one)."""

def vec_dot(ggml_type: int, w: bytes, x: npt.NDArray[np.float32], isa: str | None = None) -> float:
    """Dot product of one quantized row ``w`` with f32 ``x`` through the production path (x is
    quantized to the type's activation format first, as in matmul)."""

def available_isas() -> list[str]: ...
def active_isa() -> str: ...

class _KernelInfo(TypedDict):
    #: Tier of the row-major kernels (every format that is not packed).
    isa: str
    #: Best verified tier of this CPU.
    detected: str
    #: Every tier this CPU can run, scalar first.
    available: list[str]
    #: Weights of ``packed_formats`` are repacked at load and run the packed matmul.
    packed: bool
    packed_formats: list[str]
    #: ``avx2`` / ``avx-vnni`` (8-row panels), ``avx512-vnni`` (16-row panels) or ``none``.
    packed_kernel: str
    #: The packed matmul uses ``vpdpbusd`` (AVX-VNNI or AVX-512 VNNI).
    vnni: bool

def kernel_info() -> _KernelInfo:
    """The kernel choices this process makes, for benchmark reports."""
