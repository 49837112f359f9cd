"""A repro file nobody else writes: the first module where a port parts from its reference,
as one standalone script and one ``.npz``, run in both frameworks without xgrad.

For each side that diverges, :func:`write` writes ``repro_<side>.py`` and ``repro_<side>.npz``:
the ``.npz`` holds the unit's input as the reference computed it, each side's weights
(canonical layout) and both captured outputs; the script rebuilds the unit in each side's own
framework, as that framework's code writes it (``torch.nn.functional``, ``jax.nn``,
``keras.ops``, NumPy), with each side's own configuration and weights, runs both on the same
input, and prints the difference and the cause xgrad named. It imports NumPy and the two
frameworks only, and reads the ``.npz`` with ``allow_pickle=False``.

Units of a layer kind xgrad knows are written out; a module of no known kind (opaque) is not
(its code cannot be written from outside: :class:`ReproUnit` says why): its ``.npz`` alone is
written, holding its input, both outputs and both sides' weights, for a script of your own.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xgrad._io import atomic_write, check_writable
from xgrad.errors import OutputError
from xgrad.layers import (
    AbstractLayer,
    Activation,
    BatchNorm,
    Dense,
    Dropout,
    Flatten,
    LayerNorm,
    RMSNorm,
)

__all__ = ["ReproUnit", "write"]


@dataclass(frozen=True)
class ReproUnit:
    """What a repro needs of one diverging unit, kept by the report (not in its JSON).

    Attributes:
        side: the candidate's label in the report.
        frameworks: ``(reference framework, candidate framework)``: ``numpy``, ``jax``,
            ``flax.nnx``, ``flax.linen``, ``tensorflow``, ``torch``.
        dtypes: the two sides' dtypes.
        path: the unit's path on the reference side; ``names``: each side's name of it.
        where: ``forward`` or ``backward``.
        layers: ``(reference's layers, candidate's layers)`` of the unit (configurations;
            ``None`` where a side's is unknown).
        weights: ``(reference's, candidate's)`` weights by local name, canonical layout.
        input: the unit's input as the reference computed it.
        outputs: ``(reference's, candidate's)`` captured outputs.
        refused: why no script can be written, or ``None``.
    """

    side: str
    frameworks: tuple[str, str]
    dtypes: tuple[str, str]
    path: str
    names: dict[str, str]
    where: str
    layers: tuple[list | None, list | None]
    weights: tuple[dict, dict]
    input: np.ndarray
    outputs: tuple[np.ndarray, np.ndarray]
    refused: str | None = None
    arrays: dict = field(default_factory=dict, repr=False)


# -- code, per framework --------------------------------------------------------------------------

_ACT = {
    "torch": {
        "linear": "{h}",
        "relu": "F.relu({h})",
        "sigmoid": "torch.sigmoid({h})",
        "tanh": "torch.tanh({h})",
        "softmax": "torch.softmax({h}, dim=-1)",
        "log_softmax": "torch.log_softmax({h}, dim=-1)",
        "gelu": "F.gelu({h}, approximate='none')",
        "gelu_tanh": "F.gelu({h}, approximate='tanh')",
        "elu": "F.elu({h})",
        "selu": "F.selu({h})",
        "softplus": "F.softplus({h}, threshold=1e9)",
        "silu": "F.silu({h})",
        "relu6": "F.relu6({h})",
        "hard_sigmoid": "F.hardsigmoid({h})",
        "leaky_relu": "F.leaky_relu({h}, {slope!r})",
    },
    "jax": {
        "linear": "{h}",
        "relu": "jax.nn.relu({h})",
        "sigmoid": "jax.nn.sigmoid({h})",
        "tanh": "jnp.tanh({h})",
        "softmax": "jax.nn.softmax({h}, axis=-1)",
        "log_softmax": "jax.nn.log_softmax({h}, axis=-1)",
        "gelu": "jax.nn.gelu({h}, approximate=False)",
        "gelu_tanh": "jax.nn.gelu({h}, approximate=True)",
        "elu": "jax.nn.elu({h})",
        "selu": "jax.nn.selu({h})",
        "softplus": "jax.nn.softplus({h})",
        "silu": "jax.nn.silu({h})",
        "relu6": "jax.nn.relu6({h})",
        "hard_sigmoid": "jax.nn.hard_sigmoid({h})",
        "leaky_relu": "jax.nn.leaky_relu({h}, {slope!r})",
    },
    "tensorflow": {
        "linear": "{h}",
        "relu": "tf.nn.relu({h})",
        "sigmoid": "tf.sigmoid({h})",
        "tanh": "tf.tanh({h})",
        "softmax": "tf.nn.softmax({h}, axis=-1)",
        "log_softmax": "tf.nn.log_softmax({h}, axis=-1)",
        "gelu": "tf.nn.gelu({h}, approximate=False)",
        "gelu_tanh": "tf.nn.gelu({h}, approximate=True)",
        "elu": "tf.nn.elu({h})",
        "selu": "tf.nn.selu({h})",
        "softplus": "tf.nn.softplus({h})",
        "silu": "tf.nn.silu({h})",
        "relu6": "tf.nn.relu6({h})",
        "hard_sigmoid": "tf.nn.relu6({h} + 3) / 6",
        "leaky_relu": "tf.nn.leaky_relu({h}, {slope!r})",
    },
    "numpy": {
        "linear": "{h}",
        "relu": "np.maximum({h}, 0)",
        "sigmoid": "1 / (1 + np.exp(-{h}))",
        "tanh": "np.tanh({h})",
        "softmax": "np.exp({h} - {h}.max(-1, keepdims=True)) / np.exp({h} - "
        "{h}.max(-1, keepdims=True)).sum(-1, keepdims=True)",
        "log_softmax": "{h} - {h}.max(-1, keepdims=True) - np.log(np.exp({h} - "
        "{h}.max(-1, keepdims=True)).sum(-1, keepdims=True))",
        "gelu": "0.5 * {h} * (1 + erf({h} / np.sqrt(2)))",
        "gelu_tanh": "0.5 * {h} * (1 + np.tanh(np.sqrt(2 / np.pi) * ({h} + 0.044715 * {h}**3)))",
        "elu": "np.where({h} > 0, {h}, np.expm1(np.minimum({h}, 0)))",
        "selu": "1.0507009873554805 * np.where({h} > 0, {h}, 1.6732632423543772 * "
        "np.expm1(np.minimum({h}, 0)))",
        "softplus": "np.logaddexp({h}, 0)",
        "silu": "{h} / (1 + np.exp(-{h}))",
        "relu6": "np.clip({h}, 0, 6)",
        "hard_sigmoid": "np.clip({h} + 3, 0, 6) / 6",
        "leaky_relu": "np.where({h} > 0, {h}, {slope!r} * {h})",
    },
}

_HEADER = {
    "torch": "import torch\nimport torch.nn.functional as F\n",
    "jax": "import jax\nimport jax.numpy as jnp\n",
    "tensorflow": "import tensorflow as tf\n",
    "numpy": "from math import erf as _erf\n\nerf = np.vectorize(_erf)\n",
}

_PACKAGES = {"torch": "torch", "jax": "jax", "tensorflow": "tensorflow", "numpy": "numpy"}


def _family(framework: str) -> str:
    return "jax" if framework.startswith(("jax", "flax")) else framework


def _activation(family: str, name: str, h: str) -> str:
    kind, _, slope = name.partition(":")
    template = _ACT[family][kind]
    return template.format(h=h, slope=float(slope) if slope else 0.0)


def _tensor(family: str, key: str, dtype: str) -> str:
    array = f"data[{key!r}].astype({dtype!r})"
    if family == "torch":
        return f"torch.from_numpy({array})"
    if family == "jax":
        return f"jnp.asarray({array})"
    if family == "tensorflow":
        return f"tf.constant({array})"
    return array


def _norm(family: str, h: str, w: dict, eps: float, *, center: bool, rms: bool) -> list[str]:
    mean = {
        "torch": "{h}.mean(-1, keepdim=True)",
        "tensorflow": "tf.reduce_mean({h}, -1, keepdims=True)",
    }.get(family, "{h}.mean(-1, keepdims=True)")
    rsqrt = {"torch": "torch.rsqrt", "jax": "jax.lax.rsqrt", "tensorflow": "tf.math.rsqrt"}.get(
        family, "1 / np.sqrt"
    )
    lines = []
    if center:
        lines.append(f"h = h - {mean.format(h='h')}")
    lines.append(f"h = h * {rsqrt}({mean.format(h='h * h')} + {eps!r})")
    if "scale" in w:
        lines.append(f"h = h * {w['scale']}")
    if "bias" in w:
        lines.append(f"h = h + {w['bias']}")
    return lines


def _layer_lines(family: str, layer: AbstractLayer, w: dict) -> list[str]:
    """Lines computing ``h = layer(h)`` in the framework's own code (``w``: local name ->
    the expression of that weight)."""
    if isinstance(layer, Dense):
        if family == "torch":
            lines = [
                f"h = F.linear(h, {w['kernel']}.T" + (f", {w['bias']})" if "bias" in w else ")")
            ]
        elif family == "tensorflow":
            lines = [
                f"h = tf.einsum('...i,io->...o', h, {w['kernel']})"
                + (f" + {w['bias']}" if "bias" in w else "")
            ]
        else:
            lines = [f"h = h @ {w['kernel']}" + (f" + {w['bias']}" if "bias" in w else "")]
        if layer.activation != "linear":
            lines.append(f"h = {_activation(family, layer.activation, 'h')}")
        return lines
    if isinstance(layer, Activation):
        return [f"h = {_activation(family, layer.name, 'h')}"]
    if isinstance(layer, LayerNorm | RMSNorm):
        return _norm(
            family,
            "h",
            w,
            layer.epsilon,
            center=isinstance(layer, LayerNorm),
            rms=isinstance(layer, RMSNorm),
        )
    if isinstance(layer, BatchNorm) and not layer.training:
        rsqrt = {"torch": "torch.rsqrt", "jax": "jax.lax.rsqrt", "tensorflow": "tf.math.rsqrt"}
        lines = [
            f"h = (h - {w['mean']}) * {rsqrt.get(family, '1 / np.sqrt')}({w['var']} + "
            f"{layer.epsilon!r})"
        ]
        lines += [f"h = h * {w['scale']}"] if "scale" in w else []
        lines += [f"h = h + {w['bias']}"] if "bias" in w else []
        return lines
    if isinstance(layer, Dropout) and not layer.active:
        return []
    if isinstance(layer, Flatten):
        return [
            "h = h.reshape(h.shape[0], -1)"
            if family != "tensorflow"
            else "h = tf.reshape(h, (h.shape[0], -1))"
        ]
    raise ValueError(f"{layer.describe()} has no standalone form")


def _function(
    name: str, framework: str, layers: list, weights: dict, dtype: str, prefix: str
) -> str:
    family = _family(framework)
    w = {local: _tensor(family, f"{prefix}.{local}", dtype) for local in weights}
    body = [f"h = {_tensor(family, 'input', dtype)}"]
    for k, layer in enumerate(layers):
        body += _layer_lines(family, layer, w if k == 0 else {})
    out = {"torch": "h.detach().numpy()", "tensorflow": "h.numpy()"}.get(family, "np.asarray(h)")
    body.append(f"return np.asarray({out}, dtype=np.float64)")
    imports = _HEADER[family].strip().splitlines()
    lines = [f"def {name}():", *(f"    {i}" for i in imports), "", *(f"    {b}" for b in body)]
    return "\n".join(lines)


def _script(unit: ReproUnit, npz_name: str, summary: str, cause: str) -> str:
    (ref_fw, cand_fw), (ref_dt, cand_dt) = unit.frameworks, unit.dtypes
    ref_layers, cand_layers = unit.layers
    packages = sorted({"numpy", _PACKAGES[_family(ref_fw)], _PACKAGES[_family(cand_fw)]})
    names = " <-> ".join(dict.fromkeys(unit.names.values()))
    text = [
        f'"""xgrad repro: {unit.path or "(the model)"} ({names}), where {unit.side} first parts',
        "from the reference.",
        "",
        f"xgrad reported: {summary}",
        f"cause: {cause}",
        "",
        f"Needs only: {', '.join(packages)} (run: python {npz_name[:-4]}.py); it reads",
        f"{npz_name} beside it (allow_pickle=False) and imports no xgrad.",
        '"""',
        "",
        "from pathlib import Path",
        "",
        "import numpy as np",
        "",
        f"data = np.load(Path(__file__).with_name({npz_name!r}), allow_pickle=False)",
        "",
        "",
        _function("reference", ref_fw, ref_layers, unit.weights[0], ref_dt, "reference"),
        "",
        "",
        _function("candidate", cand_fw, cand_layers, unit.weights[1], cand_dt, "candidate"),
        "",
        "",
        "ref, cand = reference(), candidate()",
        "rel = np.linalg.norm(cand - ref) / np.linalg.norm(ref)",
        f'print(f"{unit.path or "(the model)"}: reference ({ref_fw} {ref_dt}: '
        f"{' -> '.join(x.describe() for x in ref_layers)}) against {unit.side} "
        f'({cand_fw} {cand_dt}: {" -> ".join(x.describe() for x in cand_layers)})")',
        'print(f"relative difference of the outputs: {rel:.3g} (as captured in the models: '
        "{np.linalg.norm(data['candidate_output'] - data['reference_output']) / "
        "np.linalg.norm(data['reference_output']):.3g})\")",
        f"print({('cause: ' + cause)!r})",
        "",
    ]
    return "\n".join(text)


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def write(report, directory: str | os.PathLike) -> list[Path]:
    """Write one script and one ``.npz`` per diverging side of ``report`` into
    ``directory`` (created if missing), the ``.npz`` alone for a unit of no kind xgrad knows;
    returns the files written (scripts, and ``.npz`` files written alone).

    Raises:
        OutputError: the report has no diverging unit to write, or the directory cannot be
            written.
    """
    units = getattr(report, "repro_units", ())
    if not units:
        raise OutputError(
            "this report has no diverging unit to reproduce (every compared value agrees, or "
            "no layer was compared: explain=False?)"
        )
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    causes = {d.framework: d for d in getattr(report, "diagnoses", ())}
    for unit in units:
        stem = f"repro_{_safe(unit.side)}"
        npz = folder / f"{stem}.npz"
        check_writable(npz)
        arrays = {
            "input": unit.input,
            "reference_output": unit.outputs[0],
            "candidate_output": unit.outputs[1],
        }
        for side, weights in zip(("reference", "candidate"), unit.weights, strict=True):
            arrays.update({f"{side}.{k}": np.asarray(v) for k, v in weights.items()})
        atomic_write(npz, lambda f, a=arrays: np.savez(f, **a), binary=True)
        if unit.refused:  # its data alone, for a script of the user's own
            written.append(npz)
            continue
        d = causes.get(unit.side)
        cause = f"{d.cause}: {d.detail}" if d is not None else "not named (no diagnosis)"
        script = folder / f"{stem}.py"
        text = _script(unit, npz.name, report.summary(), cause)
        atomic_write(script, lambda f, t=text: f.write(t), binary=False)
        written.append(script)
    return written
