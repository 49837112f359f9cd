"""One ``.keras`` file evaluated under the Keras backend this process started with.

Keras chooses its backend (TensorFlow, JAX or PyTorch) once, when it is first imported, so
:func:`xgrad.compare_backends` runs this module once per backend, each in its own process
with ``KERAS_BACKEND`` set::

    KERAS_BACKEND=jax python -m xgrad.frameworks.tensorflow.backend_worker REQUEST.json

The request names the model file, the ``.npz`` of inputs (read with ``allow_pickle=False``),
the layers to call in order (the *plan*, made by the parent from its reading of the same
file), the loss or cotangent, and where to write the result. The model is loaded in Keras
safe mode. Each layer is called with ``training=False`` (Dropout is skipped, as the parent's
reading says), an attention layer as the plan says (``layer(a, a, use_causal_mask=...)``
for Keras' own); a zero tensor is added to every layer's output so that ``dL/d output`` of
each layer is the gradient with respect to that zero. The gradients come from the backend's
own autodiff (``tf.GradientTape``, ``jax.value_and_grad`` / ``jax.vjp``,
``torch.autograd.grad``), with the trainable variables replaced by differentiable copies of
their values inside a ``keras.StatelessScope``. The losses are xgrad's, in the backend's own
framework (:mod:`xgrad.losses`). Token ids (the request's ``ids``: a model whose first layer
is an Embedding) enter as ``int32`` and are not differentiated (no ``dL/d input``).

Importing this module imports no framework.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["BACKENDS", "keras_leaves", "main"]

BACKENDS = ("tensorflow", "jax", "torch")
"""The Keras backends, by the name ``KERAS_BACKEND`` takes."""


def keras_leaves(model) -> list:
    """The model's layers, nested models opened, each once, in a fixed order (the same for
    every process that loads the same file)."""
    import keras

    out: dict[int, object] = {}
    for layer in model.layers:
        for leaf in keras_leaves(layer) if isinstance(layer, keras.Model) else [layer]:
            out.setdefault(id(leaf), leaf)
    return list(out.values())


def _run(plan, a, leaves, eps, values):
    """Call the plan's layers on ``a``; add ``eps[path]`` to each output, record it."""
    for node in plan:
        if node["op"] == "residual":
            inner = _run(node["children"], a, leaves, eps, values)
            a = a + inner if node["leaf"] is None else leaves[node["leaf"]]([a, inner])
        elif node["op"] == "call":  # attention: (a, a) and use_causal_mask, as the plan says
            if "pad" in node:  # a ZeroPadding read into this convolution or pooling
                import keras

                a = keras.ops.pad(a, [[0, 0], *node["pad"], [0, 0]])
            args = [a] * node.get("args", 1)
            a = leaves[node["leaf"]](*args, training=False, **node.get("kwargs", {}))
        # "identity": an inactive Dropout
        a = a + eps[node["path"]]
        values[node["path"]] = a
    return a


def _paths(plan) -> list[str]:
    out = []
    for node in plan:
        out += _paths(node.get("children", []))
        out.append(node["path"])
    return out


def _loss_fn(backend: str, name: str):
    from xgrad.losses import get_loss

    loss = get_loss(name)
    if backend == "tensorflow":
        from xgrad.frameworks.tensorflow.ops import tf_loss

        return tf_loss(loss)
    if backend == "jax":
        from xgrad.frameworks.jax.ops import jax_loss

        return jax_loss(loss)
    from xgrad.frameworks.torch.losses import torch_loss

    return torch_loss(loss)


def _evaluate(backend, forward, values, x, eps, loss_fn, y, cotangent, ids=False):
    """``(loss, output, dL/dvalues, dL/dx, dL/deps, activations)`` by the backend's autodiff,
    where ``forward(values, x, eps) -> (output, activations)``; with ``ids`` (``x`` holds
    integer token ids) ``x`` is not differentiated and ``dL/dx`` is ``None``."""
    if ids:
        g_x_free = _evaluate(
            backend, lambda v, _, e: forward(v, x, e), values, 0.0, eps, loss_fn, y, cotangent
        )
        return (*g_x_free[:3], None, *g_x_free[4:])
    if backend == "tensorflow":
        import tensorflow as tf

        x = x if tf.is_tensor(x) else tf.constant(x)  # a stand-in for ids: a float scalar
        with tf.GradientTape() as tape:
            tape.watch([values, x, eps])
            out, acts = forward(values, x, eps)
            value = None if loss_fn is None else loss_fn(out, y)
        target, grads_out = (out, cotangent) if loss_fn is None else (value, None)
        grads = tape.gradient(
            target,
            [values, x, eps],
            output_gradients=grads_out,
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )
        # an Embedding's gradient comes as IndexedSlices (its rows looked up): made dense
        grads = tf.nest.map_structure(tf.convert_to_tensor, grads)
        return value, out, *grads, acts
    if backend == "jax":
        import jax

        if loss_fn is None:

            @jax.jit
            def pullback(v, xx, e, cot):
                out, vjp, acts = jax.vjp(forward, v, xx, e, has_aux=True)
                return out, vjp(cot), acts

            out, grads, acts = pullback(values, x, eps, cotangent)
            return (None, out, *grads, acts)

        def objective(v, xx, e, yy):
            out, acts = forward(v, xx, e)
            return loss_fn(out, yy), (out, acts)

        step = jax.jit(jax.value_and_grad(objective, argnums=(0, 1, 2), has_aux=True))
        (value, (out, acts)), grads = step(values, x, eps, y)
        return (value, out, *grads, acts)
    import torch

    if not isinstance(x, torch.Tensor):  # a stand-in for ids, which forward ignores
        x = torch.zeros((), dtype=values[0].dtype if values else torch.float32)
    for t in [*values, x, *eps.values()]:
        t.requires_grad_(True)
    out, acts = forward(values, x, eps)
    keys = list(eps)
    sources = [*values, x, *(eps[k] for k in keys)]
    if loss_fn is None:
        value, grads = None, torch.autograd.grad(out, sources, grad_outputs=cotangent)
    else:
        value = loss_fn(out, y)
        grads = torch.autograd.grad(value, sources, allow_unused=True)
    grads = [torch.zeros_like(s) if g is None else g for s, g in zip(sources, grads, strict=True)]
    n = len(values)
    return (value, out, grads[:n], grads[n], dict(zip(keys, grads[n + 1 :], strict=True)), acts)


def _numpy(t) -> np.ndarray:
    """A NumPy array; 16-bit floats widened to float32 (exactly) so ``.npz`` can hold them."""
    if hasattr(t, "detach"):  # torch
        t = t.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
    arr = np.asarray(t)
    return arr if arr.dtype.kind == "f" and arr.dtype.itemsize >= 4 else arr.astype(np.float32)


def _versions(backend: str) -> dict[str, str]:
    import keras

    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    return {"keras": keras.__version__, backend: sys.modules[module].__version__}


def evaluate_file(request: dict) -> dict:
    """Evaluate the request's model (see the module docstring); write the result ``.npz``
    and return its metadata."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    data = np.load(request["inputs"], allow_pickle=False)
    dtype = request["dtype"]
    if backend == "jax" and dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)  # this process only
    import keras

    if keras.backend.backend() != backend:
        raise RuntimeError(f"Keras runs on {keras.backend.backend()!r}, not {backend!r}")
    model = keras.saving.load_model(request["model"], compile=False, safe_mode=True)
    leaves = keras_leaves(model)
    by_path = {v.path: v for v in model.trainable_variables}
    missing = [p for p in request["variables"] if p not in by_path]
    if missing:
        raise RuntimeError(f"the model loaded under {backend} has no variable(s) {missing}")
    variables = [by_path[p] for p in request["variables"]]
    plan = request["plan"]
    ops = keras.ops
    ids = bool(request.get("ids"))  # token ids: integers, never differentiated
    x = ops.convert_to_tensor(data["x"], dtype="int32" if ids else request["input_dtype"])
    y = ops.convert_to_tensor(data["y"], dtype=dtype) if "y" in data else None
    cot = ops.convert_to_tensor(data["cotangent"], dtype=dtype) if "cotangent" in data else None
    loss_fn = None if request["loss"] is None else _loss_fn(backend, request["loss"])

    def copy(v):
        value = ops.convert_to_tensor(v.value)
        return value.detach().clone() if hasattr(value, "detach") else ops.copy(value)

    values = [copy(v) for v in variables]
    # zeros of each layer output's shape: the shapes come from one plain forward pass
    probe: dict = {}
    zero = {}
    with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
        _run(plan, x, leaves, _ZeroEps(), probe)
    for path, a in probe.items():
        zero[path] = ops.zeros(tuple(a.shape), dtype=a.dtype)

    def forward(vals, xx, eps):
        acts: dict = {}
        with keras.StatelessScope(state_mapping=list(zip(variables, vals, strict=True))):
            out = _run(plan, xx, leaves, eps, acts)
        return out, acts

    start = time.perf_counter()
    value, out, g_values, g_x, g_eps, acts = _evaluate(
        backend, forward, values, x, zero, loss_fn, y, cot, ids
    )
    seconds = time.perf_counter() - start
    arrays = {"output": _numpy(out)}
    if g_x is not None:
        arrays["input"] = _numpy(g_x)
    if value is not None:
        arrays["loss"] = _numpy(value)
    for i, g in enumerate(g_values):
        arrays[f"param{i}"] = _numpy(g)
    for i, path in enumerate(_paths(plan)):
        arrays[f"act{i}"] = _numpy(acts[path])
        arrays[f"grad{i}"] = _numpy(g_eps[path])
    np.savez(request["out"], **arrays)
    return {"backend": backend, "seconds": seconds, "versions": _versions(backend)}


class _ZeroEps(dict):
    """``eps[path]`` is 0 for the probe pass (adds nothing, whatever the shape)."""

    def __getitem__(self, key):
        return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m xgrad.frameworks.tensorflow.backend_worker REQUEST.json``: evaluate; the
    metadata goes to ``REQUEST.json``'s ``meta`` path; errors to stderr, exit 1."""
    argv = sys.argv[1:] if argv is None else argv
    request = json.loads(Path(argv[0]).read_text())
    try:
        meta = evaluate_file(request)
    except Exception as exc:  # reported to the parent in one line
        print(f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}", file=sys.stderr)
        return 1
    Path(request["meta"]).write_text(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
