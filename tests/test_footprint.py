"""Footprint: what memoryd costs the machine it runs on (scheduling, memory when idle)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog

from memoryd.config import Config
from memoryd.embed import Embedder
from memoryd.systemd import render_unit


def test_unit_yields_cpu_and_disk(tmp_path: Path, config: Config) -> None:
    """The rendered unit lowers memoryd's CPU and I/O priority below the user's own work."""
    source = tmp_path / "config.toml"
    source.write_text("")
    text = render_unit(replace(config, file=source))
    settings = dict(re.findall(r"^(Nice|CPUWeight|IOSchedulingClass|IOSchedulingPriority)=(\S+)$", text, re.M))
    assert int(settings["Nice"]) > 0
    assert int(settings["CPUWeight"]) < 100  # systemd's default weight
    assert settings["IOSchedulingClass"] in ("idle", "best-effort")
    if settings["IOSchedulingClass"] == "best-effort":
        assert int(settings["IOSchedulingPriority"]) == 7


def _run_python(code: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter (nothing imported yet) and return the JSON it prints last."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


_LIGHT_START = """
import json, sys
from memoryd.config import EmbeddingConfig
from memoryd.embed import Embedder
embedder = Embedder(EmbeddingConfig())
vector = embedder.encode(["the storm poem, written in code"])[0]
loaded = sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules)
print(json.dumps({"precision": embedder.precision, "loaded": loaded, "vector": vector.tolist()}))
"""


@pytest.mark.slow
def test_remembered_onnx_choice_starts_without_torch(embedder: Embedder) -> None:
    """Once "auto" has chosen an ONNX precision here, a new process encodes without importing torch or transformers."""
    if embedder.precision not in ("onnx-int8", "onnx-fp32"):
        pytest.skip(f"auto chose {embedder.precision} on this machine, not an ONNX precision")
    started = _run_python(_LIGHT_START)
    assert started["precision"] == embedder.precision
    assert started["loaded"] == []
    expected = embedder.encode(["the storm poem, written in code"])[0]
    np.testing.assert_allclose(np.asarray(started["vector"], dtype=np.float32), expected, atol=1e-5)


_FULL_START = """
import gc, json
import torch
from memoryd.config import EmbeddingConfig
from memoryd.embed import Embedder
embedder = Embedder(EmbeddingConfig(precision="onnx-fp32"))
gc.collect()
weights = sum(o.numel() for o in gc.get_objects() if isinstance(o, torch.Tensor))
print(json.dumps({"precision": embedder.precision, "torch_weights": weights}))
"""


@pytest.mark.slow
def test_full_start_frees_the_fp32_model_once_onnx_is_chosen(tmp_path: Path) -> None:
    """A start that loads the fp32 reference to probe ONNX keeps no PyTorch tensor once ONNX is chosen."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "MEMORYD_PRECISION_CHILD": "1"}  # the full start, here
    started = _run_python(_FULL_START, env)
    assert started["precision"] == "onnx-fp32"
    assert started["torch_weights"] == 0


@pytest.mark.slow
def test_idle_model_is_unloaded_and_loaded_again_on_demand(embedder: Embedder) -> None:
    """With idle_unload_s, an idle model is freed and the next encode loads it again, giving the same vectors."""
    light = Embedder(replace(embedder.config, idle_unload_s=1))
    text = "the sourdough recipe, again"
    before = light.encode([text])
    assert not light.release_if_idle()  # just used
    time.sleep(1.1)
    with structlog.testing.capture_logs() as logs:
        assert light.release_if_idle()
        assert not light.release_if_idle()  # nothing left to free
        after = light.encode([text])
    events = [e["event"] for e in logs]
    assert events == ["model_unloaded", "model_reloaded"]
    np.testing.assert_allclose(after, before, atol=1e-6)


def test_model_is_kept_without_idle_unload(embedder: Embedder) -> None:
    """By default (idle_unload_s = 0) the model is never unloaded."""
    assert embedder.config.idle_unload_s == 0
    assert not embedder.release_if_idle()


@pytest.mark.slow
def test_chunking_a_batch_equals_chunking_each_text(embedder: Embedder) -> None:
    """Texts chunked together in one tokenizer call get the same spans as each chunked alone."""
    texts = ["", "  ", "ok", "word " * 600, "Bonjour, ça va ? " * 40, "x" * 250_000, "a b " * 60_000]
    assert embedder.chunk_many(texts) == [embedder.chunk(t) for t in texts]
    for text, spans in zip(texts, embedder.chunk_many(texts), strict=True):
        assert spans[0].start == 0 and spans[-1].end >= len(text.rstrip())  # trailing spaces are no token
