"""One ``.keras`` file under each of Keras' own backends: TensorFlow, JAX and PyTorch.

Keras 3 runs the same model on three frameworks, and picks the one it uses when it is first
imported (``KERAS_BACKEND``). :func:`compare_backends` therefore evaluates the file once
per backend in its own Python process (:mod:`xgrad.frameworks.tensorflow.backend_worker`),
each from the same file, weights and batch, and reports the three sets of gradients side by
side against xgrad's float64 NumPy model of the same layers, like :func:`xgrad.compare`:
per-parameter entries under Keras' variable paths, each layer's output and ``dL/d output``,
where each backend first parts from the reference, and on a mismatch the diagnosis.

This process reads the file with Keras on TensorFlow (as :func:`xgrad.read_model` does) to
learn its layers; the file is only ever loaded in safe mode.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from xgrad.align import identity_alignment
from xgrad.comparison import (
    Comparison,
    Description,
    Side,
    assemble,
    evaluate,
    finish,
    judged_dtype,
    model_text,
    prepare_inputs,
)
from xgrad.errors import FrameworkError, InputError
from xgrad.frameworks.base import AbstractModel, Gradients, LayerInfo
from xgrad.frameworks.kinds import to_canonical
from xgrad.frameworks.registry import get_framework, lookup_framework, read_model
from xgrad.frameworks.tensorflow.backend_worker import BACKENDS
from xgrad.layers import Attention, Dropout
from xgrad.metrics import tolerance
from xgrad.port import sample_inputs
from xgrad.report import Report

__all__ = ["BACKENDS", "RecordedModel", "compare_backends"]

TIMEOUT = 600.0
"""Seconds one backend's process may take (loading Keras and the backend included)."""


class RecordedModel(AbstractModel):
    """A model whose evaluation was made elsewhere (another process): the layers, weights
    and names of ``model``, with the :class:`Gradients` recorded there.

    It can answer what the report and the diagnosis ask (layers, weights, names, dtype) but
    cannot evaluate again.
    """

    def __init__(self, model: AbstractModel, grads: Gradients, framework: str) -> None:
        self._model, self._grads = model, grads
        self.framework = framework
        self.description = model.description
        self.dtype = model.dtype
        self.input_shape, self.output_shape = model.input_shape, model.output_shape
        self.layers = model.layers

    @property
    def grads(self) -> Gradients:
        return self._grads

    @property
    def native(self):
        return self._model.native

    def weights(self):
        return self._model.weights()

    def native_names(self):
        return self._model.native_names()

    def with_weights(self, weights):
        raise FrameworkError(f"{self.framework}: a recorded evaluation cannot take new weights")

    def _evaluate(self, x, y, loss, cotangent, capture) -> Gradients:
        raise FrameworkError(f"{self.framework}: a recorded evaluation cannot be run again")


def _check_backends(backends) -> tuple[str, ...]:
    names = [b.strip() for b in backends.split(",")] if isinstance(backends, str) else backends
    names = [str(b).strip().lower() for b in names]
    unknown = [b for b in names if b not in BACKENDS]
    if unknown or not names:
        raise InputError(
            f"unknown Keras backend(s) {unknown or names}: choose from {', '.join(BACKENDS)}"
        )
    if len(set(names)) != len(names):
        raise InputError(f"backends {names} name one twice")
    for b in names:  # each Keras backend is a framework of xgrad's registry, of one name
        framework = lookup_framework(b)
        package = framework.requires[-1]
        if importlib.util.find_spec(package) is None:
            raise FrameworkError(
                f"Keras backend {b!r} needs {package}, which is not installed: "
                f"pip install 'xgrad[{framework.extra}]' (or leave {b} out of --backends)"
            )
    return tuple(names)


def _plan(model, infos: Sequence[LayerInfo], leaf_index: dict[int, int]) -> list[dict]:
    """The layers to call, in order, as the worker calls them: ``op`` ``call`` (an attention
    layer with ``args`` 2, query and value both the stream, and ``kwargs``
    ``{"use_causal_mask": causal}``, as Keras' ``MultiHeadAttention`` is called for
    self-attention), ``residual`` or ``identity``.

    Raises:
        InputError: a layer the other backends cannot replay (xgrad's own Keras layers, an
            active Dropout, a layer updating its state), named.
    """
    plan = []
    for info in infos:
        layer = model.keras_layer(info.path)
        _check_replayable(info, layer)
        node = {"path": info.path, "leaf": None if layer is None else leaf_index[id(layer)]}
        if info.children:
            node.update(op="residual", children=_plan(model, info.children, leaf_index))
        elif isinstance(info.layer, Dropout):
            if info.layer.active:
                raise InputError(f"layer {info.path}: an active Dropout cannot be replayed")
            node["op"] = "identity"
        else:
            if info.layer is not None and info.layer.updates_state:
                raise InputError(
                    f"layer {info.path}: {info.layer.describe()} updates its state (training "
                    "mode), which is not compared across backends"
                )
            node["op"] = "call"
            pads = _zero_padding(info, layer)
            if pads is not None:
                node["pad"] = pads
            if isinstance(info.layer, Attention):  # Keras' own (xgrad's is refused above)
                node.update(args=2, kwargs={"use_causal_mask": bool(info.layer.causal)})
        plan.append(node)
    return plan


def _zero_padding(info: LayerInfo, layer) -> list | None:
    """The ``[[lo, hi], ...]`` zeros per spatial axis the worker adds before calling
    ``layer``: a convolution or pooling read with a ``ZeroPadding`` folded into it (the
    layer's windows padded, the Keras layer's own ``padding="valid"``), else ``None``."""
    window = getattr(info.layer, "window", None)
    if window is None or layer is None or getattr(layer, "padding", None) != "valid":
        return None
    pads = [[int(lo), int(hi)] for lo, hi in window(info.input_shape).pads]
    return pads if any(lo or hi for lo, hi in pads) else None


def _check_replayable(info: LayerInfo, layer) -> None:
    """Refuse a layer whose class is xgrad's own (``xgrad>Attention``, ``xgrad>GatedMLP``,
    ``xgrad>Embedding``, ``xgrad>Activation``): registered with Keras only in a process that
    imports xgrad's TensorFlow framework and computed with TensorFlow, it cannot be loaded
    and run by Keras on JAX or PyTorch."""
    cls = type(layer)
    if layer is None or not cls.__module__.startswith("xgrad."):
        return
    what = info.layer.describe() if info.layer is not None else info.kind
    raise InputError(
        f"layer {info.path} ({what}) is xgrad's own Keras layer {cls.__name__} "
        f"(registered as 'xgrad>{cls.__name__.removeprefix('Xgrad')}'), which only Keras on "
        "TensorFlow in a process that imports xgrad can load and run; xgrad backends "
        "compares Keras' own layers only (attention: MultiHeadAttention or "
        "GroupQueryAttention, without RoPE, fused qkv or an explicit scale; no GatedMLP; "
        "Embedding without padding_idx or scale); compare this model with xgrad.compare "
        "instead"
    )


def _paths(infos: Sequence[LayerInfo]) -> list[str]:
    out = []
    for info in infos:
        out += _paths(info.children)
        out.append(info.path)
    return out


def _start(backend, model_file, source, plan, inputs, dtypes, loss_name, tmp) -> tuple:
    """Start the process evaluating under ``KERAS_BACKEND=backend``; ``(process, request)``."""
    base = Path(tmp) / backend
    dtype, input_dtype = dtypes
    arrays = {"x": inputs.x}
    if inputs.y is not None:
        arrays["y"] = np.asarray(inputs.y, dtype=np.float64)
    if inputs.cotangent is not None:
        arrays["cotangent"] = inputs.cotangent
    np.savez(f"{base}-in.npz", **arrays)
    request = {
        "model": str(Path(model_file).resolve()),
        "inputs": f"{base}-in.npz",
        "out": f"{base}-out.npz",
        "meta": f"{base}-meta.json",
        "dtype": dtype,
        "input_dtype": input_dtype,
        "loss": loss_name,
        "plan": plan,
        "ids": source.vocab is not None,
        "variables": [source.variable(name).path for name in source.param_names],
    }
    Path(f"{base}.json").write_text(json.dumps(request))
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "xgrad.frameworks.tensorflow.backend_worker", f"{base}.json"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    return process, request


def _finish(backend, process, request, source, model_file, deadline) -> tuple[Gradients, dict]:
    """Wait for one backend's process; ``(Gradients, meta)``."""
    try:
        _, stderr = process.communicate(timeout=max(deadline - time.monotonic(), 1.0))
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise FrameworkError(
            f"Keras on {backend} took longer than the timeout; pass a larger timeout"
        ) from None
    if process.returncode != 0:
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        raise FrameworkError(
            f"Keras on {backend} could not evaluate {model_file}: "
            f"{lines[-1] if lines else f'exit status {process.returncode}'}"
        )
    meta = json.loads(Path(request["meta"]).read_text())
    with np.load(request["out"], allow_pickle=False) as data:
        got = {k: data[k] for k in data.files}
    paths = _paths(source.layers)
    # Keras variables' gradients, in canonical layout where Keras stores a weight otherwise
    # (a DepthwiseConv2D kernel read as a grouped Conv's)
    layouts = {
        f"{info.path}.{local}": layout
        for info in source.walk()
        for local, layout in info.layouts.items()
    }
    grads = Gradients(
        loss=float(got["loss"]) if "loss" in got else None,
        params={
            n: np.ascontiguousarray(to_canonical(got[f"param{i}"], layouts.get(n)))
            for i, n in enumerate(source.param_names)
        },
        input=got.get("input"),  # none for token ids
        output=got["output"],
        activations={p: got[f"act{i}"] for i, p in enumerate(paths)},
        activation_grads={p: got[f"grad{i}"] for i, p in enumerate(paths)},
    )
    return grads, meta


def _evaluate_all(names, model_file, source, plan, inputs, dtypes, timeout) -> dict:
    """Every backend's ``(Gradients, meta)``, the processes running side by side."""
    loss_name = None if inputs.cotangent is not None else inputs.loss_name
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="xgrad-backends-") as tmp:
        started = {}
        try:
            for b in names:
                started[b] = _start(b, model_file, source, plan, inputs, dtypes, loss_name, tmp)
            return {
                b: _finish(b, process, request, source, model_file, deadline)
                for b, (process, request) in started.items()
            }
        finally:  # an error in one backend leaves no process behind
            for process, _ in started.values():
                if process.poll() is None:
                    process.kill()
                    process.communicate()


def compare_backends(
    model_file: str | os.PathLike,
    backends: str | Iterable[str] = BACKENDS,
    x=None,
    y=None,
    *,
    batch: int = 8,
    seed: int = 0,
    loss: str = "projection",
    cotangent=None,
    rtol: float | None = None,
    title: str | None = None,
    explain: bool | None = None,
    timeout: float = TIMEOUT,
) -> Report:
    """Compare one ``.keras`` file's gradients under several Keras backends.

    Args:
        model_file: a Keras 3 ``.keras`` file (loaded in safe mode in every process).
        backends: Keras backends, ``"tensorflow,jax,torch"`` or a list of them.
        x: inputs, shape ``(batch, *input_shape)`` (integer token ids for a model whose first
            layer is an ``Embedding``: not differentiated, no ``dL/d input``); ``None`` draws
            ``batch`` rows from ``seed`` (standard normal, or ids in ``[0, vocab)``).
        y: targets, for the losses that need them; ``None`` draws them from ``seed``.
        batch: rows of the drawn batch.
        seed: seeds the drawn batch and targets.
        loss: a loss name (:mod:`xgrad.losses`), computed under each backend in that
            backend's framework; the default ``projection`` is ``sum(output * r)``.
        cotangent: a ``grad_output`` of the output's shape instead of a loss.
        rtol: overrides the per-dtype normwise tolerance.
        title: a heading for the report.
        explain: test the known causes of a mismatch (``None``: only on a mismatch).
        timeout: seconds one backend's process may take.

    Returns:
        A :class:`~xgrad.Report` with one column per backend (``keras[jax]``, ...) against
        xgrad's float64 NumPy model of the file's layers, from the file's own weights.

    Raises:
        ModelFileError: the file is missing, not a ``.keras`` archive, or holds code.
        FrameworkError: a backend is not installed or failed (its error is quoted).
        InputError: bad ``x``, ``y``, ``cotangent``, ``batch`` or ``loss``; a layer the other
            backends cannot replay (xgrad's own Keras layers: attention with RoPE, GatedMLP,
            ...), named.
    """
    from xgrad.frameworks.tensorflow.files import load_keras_file

    names = _check_backends(backends)
    _check_loss_and_batch(loss, cotangent, x, batch)
    keras_model = load_keras_file(model_file)
    source = read_model(keras_model)
    x_drawn = x is None
    inputs = _inputs(source, x, y, batch, seed, loss, cotangent)
    dtype = judged_dtype(source.dtype)
    ref, reference, notes = _referee(source, inputs)
    sides, alignments, models = _backend_sides(
        names, model_file, keras_model, source, ref.model, inputs, timeout
    )
    c = Comparison(ref, sides, alignments, inputs, dtype, tolerance(dtype, rtol))
    report = assemble(
        c,
        Description(
            reference=reference,
            model_text=model_text(source),
            seed=seed if x_drawn else None,
            title=title or f"{Path(model_file).name} on Keras backends {', '.join(names)}",
            models={"reference": reference, **models},
            notes=notes,
            timing={"reference": ref.seconds, **{s.label: s.seconds for s in sides}},
        ),
    )
    return finish(report, c, explain)


def _check_loss_and_batch(loss, cotangent, x, batch) -> None:
    from xgrad.losses import get_loss

    if not isinstance(loss, str):
        raise InputError("compare_backends takes a loss name, computed in each backend")
    if cotangent is None:
        get_loss(loss)
    if x is None and (isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0):
        raise InputError(f"batch must be a positive integer, got {batch!r}")


def _inputs(source, x, y, batch: int, seed: int, loss: str, cotangent):
    """The checked batch: ``x`` (or ``batch`` rows from ``seed``: standard normal, or token
    ids for a model starting with an Embedding), ``y`` (or targets of the output's shape drawn
    from ``seed``) or the cotangent."""
    from xgrad.losses import random_targets

    if x is None:
        x = sample_inputs(source.input_shape, batch, seed, vocab=source.vocab)
    if y is None and cotangent is None:
        out = source.output_shape
        rows = int(np.shape(x)[0])
        y = random_targets(
            loss, rows, int(np.prod(out)), seed, shape=(rows, *out) if len(out) > 1 else None
        )
    return prepare_inputs(source, x, y, loss, cotangent)


def _referee(source, inputs):
    """``(evaluated reference, its description, notes)``: xgrad's float64 NumPy model of the
    file's layers, or the file under Keras on TensorFlow here when a layer is unknown."""
    from xgrad.convert import spec_of

    notes = [f"{info.path} ({info.name}): {info.note}" for info in source.walk() if info.note]
    try:
        spec = spec_of(source)
    except InputError as exc:
        spec = None
        notes.append(f"no float64 reference ({exc}); Keras on TensorFlow, here, is the reference")
    if spec is not None:
        referee = get_framework("numpy").build(spec, source.weights(), dtype="float64")
        reference = {"framework": "numpy", "dtype": "float64"}
    else:
        referee = source
        reference = {"framework": "tensorflow", "dtype": source.dtype}
    return evaluate("reference", referee, inputs, capture=True), reference, notes


def _backend_sides(names, model_file, keras_model, source, referee, inputs, timeout):
    """``(sides, alignments, model descriptions)``: the file evaluated under each backend in
    its own process, each evaluation recorded as a side."""
    from xgrad.frameworks.tensorflow.backend_worker import keras_leaves

    leaf_index = {id(layer): i for i, layer in enumerate(keras_leaves(keras_model))}
    plan = _plan(source, source.layers, leaf_index)
    inputs_of = getattr(keras_model, "inputs", None)
    dtypes = (source.dtype, str(inputs_of[0].dtype) if inputs_of else source.dtype)
    sides, alignments, models = [], {}, {}
    results = _evaluate_all(names, model_file, source, plan, inputs, dtypes, timeout)
    for backend, (grads, meta) in results.items():
        label = f"keras[{backend}]"
        alignments[label] = identity_alignment(referee, source)
        sides.append(Side(label, RecordedModel(source, grads, label), grads, meta["seconds"]))
        models[label] = {
            "model": source.description,
            "framework": f"keras on {backend}",
            "dtype": source.dtype,
            "versions": meta["versions"],
        }
    return sides, alignments, models
