"""ONNX Runtime backend for BERT sentence encoders: built offline from the loaded weights, cached on disk.

The graph is written directly with ONNX Runtime's fused CPU kernels (no
exporter, no optimum: those pull other transformers versions), once per model
and library versions, into ``~/.cache/memoryd/onnx/``; an int8 variant is
derived from it by dynamic quantization.  ``embed.py`` decides whether to use
it; this module only knows how to build and run it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog

log = structlog.get_logger(__name__)

Vectors = np.ndarray[Any, np.dtype[np.float32]]

# Part of the ONNX cache key: bump it when the graph or the quantization changes.
_ONNX_RECIPE = 3


class OnnxBackend:
    """An ONNX Runtime session on the CPU; the graph mean-pools, the caller normalises."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        # No arena: it keeps the largest batch's activations for the life of the session (hundreds of MB idle).
        options.enable_cpu_mem_arena = False
        if hasattr(os, "sched_getaffinity"):  # the CPUs this process may use (taskset, cpusets), not all the host's
            options.intra_op_num_threads = len(os.sched_getaffinity(0))
        # No spinning: idle intra-op threads otherwise busy-wait for the next parallel section, taking
        # the CPUs from a second worker on the machine (or anything else). bench/workers.py, 2 cores
        # under load: 2 workers 0.33x of in-process embed_pending with spinning, 1.07x without; one
        # process alone, interleaved: without spinning 0.92x the time (not slower).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, ids: np.ndarray[Any, Any], mask: np.ndarray[Any, Any]) -> Vectors:
        feed = {"input_ids": ids.astype(np.int32), "attention_mask": mask.astype(np.int32)}
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)


def onnx_unavailable(model: Any) -> str | None:
    """Why the ONNX graph cannot be built for ``model``: it is written for BERT with mean pooling."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime and onnx are not installed"
    kinds = [type(m).__name__ for m in model]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return f"the ONNX graph is built for Transformer + Pooling (+ Normalize), not {' + '.join(kinds)}"
    config = model[0].auto_model.config
    if config.model_type != "bert" or config.hidden_act != "gelu":
        return f"the ONNX graph is built for BERT with gelu, not {config.model_type} with {config.hidden_act}"
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return "the ONNX graph is built for absolute position embeddings"
    if model[1].get_config_dict().get("pooling_mode") != "mean":
        return "the ONNX graph is built for mean pooling"
    if model.tokenizer.padding_side != "right":
        return "the ONNX graph needs right padding"
    return None


def onnx_backend(model: Any, path: Path, *, quantized: bool) -> OnnxBackend:
    """A session on the cached ONNX model, building it first if needed (once: a few seconds)."""
    try:
        folder = _onnx_cache_dir(path)
        folder.mkdir(parents=True, exist_ok=True)
        prune_stale_builds(folder)
        return OnnxBackend(_onnx_file(model, folder, quantized=quantized))
    except OSError as exc:  # no writable cache (read-only home...): build in a temporary folder
        log.warning("onnx_cache_unavailable", error=str(exc))
        with tempfile.TemporaryDirectory(prefix="memoryd-onnx-") as tmp:
            return OnnxBackend(_onnx_file(model, Path(tmp), quantized=quantized))


def cached_onnx_file(model_path: Path, *, quantized: bool) -> Path | None:
    """The ONNX model already built for ``model_path`` in the cache, if any (never builds)."""
    try:
        target = _onnx_cache_dir(model_path) / ("int8.onnx" if quantized else "fp32.onnx")
    except (OSError, ImportError):
        return None
    return target if target.is_file() else None


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/memoryd``, else ``~/.cache/memoryd``.

    The environment is read here rather than in config.py: this is where a
    cache lives, not a setting of memoryd's.
    """
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "memoryd"


def model_key(model_path: Path, *extra: object) -> str:
    """A short hash of the model folder's files (name, size, mtime) and ``extra``."""
    resolved = model_path.resolve()
    files = sorted(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in resolved.iterdir()
        if p.suffix in (".safetensors", ".bin", ".json") and p.is_file()
    )
    material = repr((str(resolved), files, _ONNX_RECIPE, *extra))
    return f"{resolved.name}-{hashlib.sha256(material.encode()).hexdigest()[:16]}"


# A build folder unused this long is removed: each is about 150 MB, and a
# library upgrade or a new model leaves the old one behind.  Not removed at
# once, because two installs (two virtualenvs) may share the cache.
STALE_BUILD_DAYS = 30


def prune_stale_builds(current: Path, *, older_than_days: float = STALE_BUILD_DAYS) -> list[Path]:
    """Mark ``current`` as used now and remove its sibling builds unused for ``older_than_days``."""
    os.utime(current)
    cutoff = time.time() - older_than_days * 86_400
    removed: list[Path] = []
    for sibling in current.parent.iterdir():
        try:
            stale = sibling != current and sibling.is_dir() and sibling.stat().st_mtime < cutoff
        except OSError:
            continue
        if stale:
            shutil.rmtree(sibling, ignore_errors=True)
            removed.append(sibling)
            log.info("onnx_cache_pruned", path=str(sibling), unused_days=older_than_days)
    return removed


def _onnx_cache_dir(model_path: Path) -> Path:
    """``~/.cache/memoryd/onnx/<model>-<key>``: the key changes with the model's files and the library versions."""
    import onnx
    import onnxruntime

    return cache_root() / "onnx" / model_key(model_path, onnx.__version__, onnxruntime.__version__)


def _onnx_file(model: Any, folder: Path, *, quantized: bool) -> Path:
    fp32 = folder / "fp32.onnx"
    int8 = folder / "int8.onnx"
    target = int8 if quantized else fp32
    if target.is_file():
        return target
    started = time.monotonic()
    # Written under a temporary name, then renamed: a concurrent process sees whole files only.
    partial = folder / f"{target.stem}.{os.getpid()}.partial.onnx"
    if quantized:
        source = fp32 if fp32.is_file() else folder / f"fp32.{os.getpid()}.partial.onnx"
        if not fp32.is_file():
            _build_bert_onnx(model, source)
        _quantize(source, partial)
        if source != fp32:
            source.replace(fp32)
    else:
        _build_bert_onnx(model, partial)
    partial.replace(target)
    log.info("onnx_model_built", path=str(target), seconds=round(time.monotonic() - started, 2))
    return target


def _build_bert_onnx(model: Any, out: Path) -> None:
    """Write a BERT sentence encoder as one ONNX graph of ONNX Runtime's fused CPU kernels.

    Built from the loaded weights, offline (no exporter tracing): embeddings +
    layer norm, then per layer one fused Attention, a SkipLayerNormalization,
    the feed-forward with BiasGelu and another SkipLayerNormalization; then
    mean pooling over the attention mask.  Token types are all 0 here, so
    their embedding is folded into the position embeddings.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    bert = model[0].auto_model
    config = bert.config
    weights = {k: v.detach().float().cpu().numpy() for k, v in bert.state_dict().items()}
    eps = float(config.layer_norm_eps)
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    ms = "com.microsoft"

    def w(name: str, array: np.ndarray[Any, Any]) -> str:
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(kind: str, inputs: list[str], output: str, *, domain: str = "", **attrs: Any) -> str:
        nodes.append(helper.make_node(kind, inputs, [output], name=output, domain=domain or None, **attrs))
        return output

    def skip_norm(x: str, skip: str, prefix: str, name: str) -> str:
        """LayerNorm(x + bias + skip): a residual connection and its layer norm, in one kernel."""
        gamma, beta, bias = (
            w(f"{name}_{k}", weights[prefix + k]) for k in ("LayerNorm.weight", "LayerNorm.bias", "dense.bias")
        )
        return op("SkipLayerNormalization", [x, skip, gamma, beta, bias], name, domain=ms, epsilon=eps)

    e = "embeddings."
    positions = weights[e + "position_embeddings.weight"]
    if e + "token_type_embeddings.weight" in weights:
        positions = positions + weights[e + "token_type_embeddings.weight"][0]
    nodes.append(
        helper.make_node(
            "EmbedLayerNormalization",
            [
                "input_ids",
                "",  # no token types: folded into the positions
                w("word", weights[e + "word_embeddings.weight"]),
                w("position", positions),
                "",
                w("emb_ln_g", weights[e + "LayerNorm.weight"]),
                w("emb_ln_b", weights[e + "LayerNorm.bias"]),
                "attention_mask",
            ],
            ["hidden_0", "mask_index"],
            name="embeddings",
            domain=ms,
            epsilon=eps,
        )
    )
    hidden = "hidden_0"
    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}."
        a = p + "attention."
        qkv_w = np.concatenate([weights[a + f"self.{n}.weight"].T for n in ("query", "key", "value")], axis=1)
        qkv_b = np.concatenate([weights[a + f"self.{n}.bias"] for n in ("query", "key", "value")])
        context = op(
            "Attention",
            [hidden, w(f"l{i}_qkv_w", qkv_w), w(f"l{i}_qkv_b", qkv_b), "mask_index"],
            f"l{i}_attention",
            domain=ms,
            num_heads=config.num_attention_heads,
        )
        projected = op("MatMul", [context, w(f"l{i}_out_w", weights[a + "output.dense.weight"].T)], f"l{i}_out")
        attended = skip_norm(projected, hidden, a + "output.", f"l{i}_ln1")
        up = op("MatMul", [attended, w(f"l{i}_up_w", weights[p + "intermediate.dense.weight"].T)], f"l{i}_up")
        gelu = op("BiasGelu", [up, w(f"l{i}_up_b", weights[p + "intermediate.dense.bias"])], f"l{i}_gelu", domain=ms)
        down = op("MatMul", [gelu, w(f"l{i}_down_w", weights[p + "output.dense.weight"].T)], f"l{i}_down")
        hidden = skip_norm(down, attended, p + "output.", f"l{i}_ln2")
    # Mean pooling over the real tokens.
    mask = op("Cast", ["attention_mask"], "mask_float", to=TensorProto.FLOAT)
    mask3 = op("Unsqueeze", [mask, w("axis_2", np.array([2], np.int64))], "mask_3d")
    total = op(
        "ReduceSum", [op("Mul", [hidden, mask3], "masked"), w("axis_1", np.array([1], np.int64))], "total", keepdims=0
    )
    op("Div", [total, op("ReduceSum", [mask, "axis_1"], "count", keepdims=1)], "embedding")
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", "tokens"])
        for n in ("input_ids", "attention_mask")
    ]
    outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", config.hidden_size])]
    graph = helper.make_graph(nodes, "memoryd_sentence_encoder", inputs, outputs, initializers)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)]
    # IR version 8 (ONNX 1.12, opset 17): onnx writes its newest by default, which older onnxruntimes refuse.
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=8), str(out))


def _quantize(source: Path, out: Path) -> None:
    """ONNX Runtime's dynamic quantization: int8 weights per output channel, activations quantized on the fly.

    Not everything: measured on an AVX2 CPU (no VNNI), quantizing every
    product gave a probe mean cosine of 0.987 to fp32, below the 0.99 bar.
    The fused attention (its Q/K/V product) and the first layer, the most
    sensitive, stay fp32: 0.993 on the probe, 0.996 on generated
    conversations, for about 1.3x the fp32 speed instead of 1.5x.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic  # type: ignore[import-untyped]

    quiet = _DropMessages("Please consider to run pre-processing")
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(
            str(source),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=["l0_out", "l0_up", "l0_down"],
            extra_options={"DefaultTensorType": 1},  # onnx.TensorProto.FLOAT: contrib ops have no shape inference
        )
    finally:
        logging.getLogger().removeFilter(quiet)


class _DropMessages(logging.Filter):
    """Drops the standard-library log records that start with a given text."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)
