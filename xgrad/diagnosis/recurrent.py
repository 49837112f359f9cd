"""Recurrent layers: LSTM gate order, PyTorch's two LSTM biases, the GRU's reset form.

The reference's recurrent unit is an :class:`~xgrad.layers.LSTM` / :class:`~xgrad.layers.GRU`
layer, or a module read as no kind whose parameters are one framework's recurrent layer:
PyTorch's ``nn.LSTM`` / ``nn.GRU`` (``weight_ih_l0 (G u, F)``, ``weight_hh_l0 (G u, u)``,
``bias_ih_l0``, ``bias_hh_l0``; GRU gates ``r, z, n``), Keras' ``LSTM`` / ``GRU``
(``kernel (F, G u)``, ``recurrent_kernel (u, G u)``, ``bias``; GRU gates ``z, r, h``) or Flax
NNX's ``RNN(OptimizedLSTMCell)`` (``dense_i.kernel``, ``dense_h.kernel``, ``dense_h.bias``)
and ``RNN(GRUCell)`` (``dense_i.kernel``, ``dense_i.bias``, ``dense_h.kernel``: gates ``r, z,
n``, no recurrent bias). It is read into xgrad's canonical layer (Keras' layout) and re-run
with NumPy in float64 on its own captured input under the alternative convention; the re-run
unchanged must give the reference's captured output (:func:`~xgrad.diagnosis.records.check`).
A sequence output ``(batch, time, u)`` is compared with a last state ``(batch, u)`` at the
last step (PyTorch's ``nn.LSTM`` returns the sequence; Keras' ``LSTM`` the last state).

Where the first divergence is a module holding the recurrent one (the whole model, when the
recurrent modules' outputs have different shapes and are not compared), each recurrent
module inside it is tried, and the finding names it (:class:`FindingAt`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from xgrad.diagnosis.evidence import Evidence, UnitEvidence, run_unit
from xgrad.diagnosis.records import Cause, Finding, check, drop
from xgrad.diagnosis.transformer import subtree
from xgrad.layers import GRU, LSTM

__all__ = ["CAUSES", "FindingAt", "Recurrent", "read_recurrent"]

LSTM_GATES = ("i", "f", "g", "o")
"""The canonical LSTM gate blocks (PyTorch, Keras (``c`` for ``g``) and Flax alike)."""

GRU_GATES = ("z", "r", "h")
"""The canonical (Keras) GRU gate blocks; PyTorch's ``r, z, n`` are ``(1, 0, 2)`` of them."""

NAMED_ORDERS = {
    (0, 2, 1, 3): "i, g, f, o: TensorFlow 1's LSTMCell order i, j, f, o",
    (2, 0, 1, 3): "g, i, f, o (cuDNN's canonical order is i, f, g, o: not this)",
}
"""Gate orders with a name, as the candidate's blocks hold the reference's ones."""


@dataclass(frozen=True)
class FindingAt(Finding):
    """A :class:`Finding` at a unit other than the one tested (a recurrent module inside
    it); ``at`` is its path."""

    at: str | None = None


@dataclass(frozen=True)
class Recurrent:
    """The reference's recurrent unit, read into xgrad's canonical layer.

    Attributes:
        path: the unit's path.
        layer: the canonical layer, returning sequences.
        weights: ``kernel (F, G u)``, ``recurrent_kernel (u, G u)``, ``bias`` (Keras layout).
        source: what it was read from, in words.
        biases: PyTorch's ``(bias_ih, bias_hh)`` in canonical gate order, else ``None``.
        x: the unit's captured input ``(batch, time, F)``.
    """

    path: str
    layer: LSTM | GRU
    weights: dict
    source: str
    biases: tuple | None
    x: np.ndarray

    def run(self, layer=None, **weights) -> np.ndarray:
        """The sequence ``(batch, time, u)`` under ``layer`` and ``weights`` (defaults: its
        own)."""
        return run_unit([layer or self.layer], {**self.weights, **weights}, self.x)


def _blocks(a: np.ndarray, order, axis: int = -1) -> np.ndarray:
    pieces = np.split(a, len(order), axis=axis)
    return np.concatenate([pieces[i] for i in order], axis=axis)


def _end(tree: dict, suffix: str):
    found = [v for k, v in tree.items() if k == suffix or k.endswith("." + suffix)]
    return found[0] if len(found) == 1 else None


def _from_tree(tree: dict):
    """``(kind, weights, source, biases)`` from a module's parameters, or ``None``."""
    w_ih, w_hh = _end(tree, "weight_ih_l0"), _end(tree, "weight_hh_l0")
    b_ih, b_hh = _end(tree, "bias_ih_l0"), _end(tree, "bias_hh_l0")
    if w_ih is not None and w_hh is not None and b_ih is not None and b_hh is not None:
        u = w_hh.shape[1]
        if w_ih.shape[0] == 4 * u:
            weights = {"kernel": w_ih.T, "recurrent_kernel": w_hh.T, "bias": b_ih + b_hh}
            return "lstm", weights, "PyTorch nn.LSTM", (b_ih, b_hh)
        if w_ih.shape[0] == 3 * u:  # r, z, n -> z, r, h
            order = (1, 0, 2)
            weights = {
                "kernel": _blocks(w_ih.T, order),
                "recurrent_kernel": _blocks(w_hh.T, order),
                "bias": np.stack([_blocks(b_ih, order), _blocks(b_hh, order)]),
            }
            return "gru", weights, "PyTorch nn.GRU", None
        return None
    di, dh = _end(tree, "dense_i.kernel"), _end(tree, "dense_h.kernel")
    if di is not None and dh is not None:
        u = dh.shape[0]
        if di.shape[1] == 4 * u and _end(tree, "dense_h.bias") is not None:
            weights = {"kernel": di, "recurrent_kernel": dh, "bias": _end(tree, "dense_h.bias")}
            return "lstm", weights, "Flax nnx.OptimizedLSTMCell", None
        if di.shape[1] == 3 * u and _end(tree, "dense_i.bias") is not None:
            order = (1, 0, 2)
            b = _blocks(_end(tree, "dense_i.bias"), order)
            weights = {
                "kernel": _blocks(di, order),
                "recurrent_kernel": _blocks(dh, order),
                "bias": np.stack([b, np.zeros_like(b)]),
            }
            return "gru", weights, "Flax nnx.GRUCell (no recurrent bias)", None
        return None
    rk = _end(tree, "recurrent_kernel")
    k = [v for n, v in tree.items() if n.split(".")[-1] == "kernel"]
    b = _end(tree, "bias")
    if rk is None or len(k) != 1 or b is None:
        return None
    u = rk.shape[0]
    weights = {"kernel": k[0], "recurrent_kernel": rk, "bias": b}
    gates = k[0].shape[1] // u
    return ("lstm" if gates == 4 else "gru"), weights, "Keras", None


def read_recurrent(ev: Evidence, unit: UnitEvidence) -> Recurrent | None:
    """The reference's recurrent unit ``unit`` as :class:`Recurrent`, when its parameters
    are one (see the module docstring) and its input is a batch of sequences; else
    ``None``."""
    x = unit.input_ref
    if x is None or np.ndim(x) != 3 or not np.issubdtype(np.asarray(x).dtype, np.floating):
        return None
    main = unit.main_ref
    if isinstance(main, LSTM | GRU):
        found = (main.kind, dict(unit.weights_ref), "xgrad", None)
    elif unit.kind == "module" and unit.path:
        found = _from_tree(subtree(ev, unit))
    else:
        return None
    if found is None:
        return None
    kind, weights, source, biases = found
    u = weights["recurrent_kernel"].shape[0]
    if kind == "lstm":
        layer = LSTM(u, return_sequences=True)
    else:
        layer = GRU(u, return_sequences=True, reset_after=np.ndim(weights["bias"]) == 2)
    try:
        shapes = layer.weight_shapes(x.shape[1:])
    except Exception:  # noqa: BLE001 - not this layer's input
        return None
    if any(np.shape(weights[k]) != s for k, s in shapes.items()):
        return None
    return Recurrent(unit.path, layer, weights, source, biases, np.asarray(x, np.float64))


def _as(seq: np.ndarray, like: np.ndarray) -> np.ndarray | None:
    """``seq (batch, time, u)`` as ``like`` holds it: the sequence, or its last state."""
    if np.shape(seq) == np.shape(like):
        return seq
    if np.shape(seq[:, -1]) == np.shape(like):
        return seq[:, -1]
    if np.size(seq) == np.size(like):  # (batch * time, u) taken as vectors
        return seq.reshape(np.shape(like))
    return None


def _last(ref: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two sides' outputs at their common shape: a sequence ``(batch, time, u)``
    against a last state ``(batch, u)`` at its last step."""
    if np.ndim(ref) == 3 and np.ndim(cand) == 2:
        return ref[:, -1], cand
    if np.ndim(ref) == 2 and np.ndim(cand) == 3:
        return ref, cand[:, -1]
    return ref, cand


def _units(ev: Evidence, unit: UnitEvidence) -> list[UnitEvidence]:
    """The unit itself, or the units inside it (every unit, for the whole model)."""
    if unit.kind in ("lstm", "gru") or unit.path:
        inner = [u for u in ev.units if u.path.startswith(unit.path + ".")]
        return [unit, *inner]
    return [u for u in ev.units if u.path]


def _candidate_biases(unit: UnitEvidence) -> tuple[str, np.ndarray] | None:
    """The candidate's recurrent unit's two biases, when it holds PyTorch's
    ``bias_ih_l0`` and ``bias_hh_l0``: ``(kind, (2, G u) in canonical gate order)``."""
    try:
        found = _from_tree(dict(unit.weights_cand))
    except (ValueError, IndexError, AttributeError):
        return None
    if found is None or not found[2].startswith("PyTorch"):
        return None
    kind, weights, _, biases = found
    return kind, (np.stack(biases) if kind == "lstm" else weights["bias"])


def _test(alternatives, words):
    """A cause's test: each alternative ``(layer, weights, what)`` of each recurrent unit
    (from the reference's unit and the candidate's two PyTorch biases, where it holds them)
    re-run; the first confirmed one, worded by ``words(rec, what)``."""

    def test(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
        for inner in _units(ev, unit):
            rec = read_recurrent(ev, inner)
            if rec is None:
                continue
            own = rec.run()
            ref_out, cand_out = _last(inner.output_ref, inner.output_cand)
            if _as(own, ref_out) is None or _as(own, cand_out) is None:
                continue
            for layer, weights, what in alternatives(rec, _candidate_biases(inner)):
                alt = _as(rec.run(layer, **weights), cand_out)
                confirmed = check(ev, cand_out, alt, _as(own, cand_out), reference=ref_out)
                if confirmed.confirmed:
                    at = inner.path if inner is not unit else None
                    inside = f"at {inner.path} ({rec.source}): " if at is not None else ""
                    residual = confirmed.residual
                    detail = f"{inside}{words(rec, what)}; {drop(before, residual)}"
                    return FindingAt(detail, residual, before, at=at)
        return None

    return test


def _gate_orders(rec: Recurrent, cand=None):
    gates = 4 if rec.layer.kind == "lstm" else 3  # a GRU's bias (2, 3u) has its blocks last
    for order in itertools.permutations(range(gates)):
        if order == tuple(range(gates)):
            continue
        weights = {k: _blocks(v, order) for k, v in rec.weights.items()}
        yield None, weights, order


def _gate_words(rec: Recurrent, order) -> str:
    if rec.layer.kind == "gru":
        held = ", ".join(GRU_GATES[i] for i in order)
        torch = " (PyTorch's order r, z, n)" if order == (1, 0, 2) else ""
        return (
            f"the candidate's GRU reads its gate blocks as z, r, h but they hold the "
            f"reference's {held}{torch}: its weights were copied in another gate order. "
            "PyTorch's nn.GRU (and Flax's nnx.GRUCell) orders the gates r, z, n, Keras z, r, "
            "h; swap the first two blocks of kernel, recurrent_kernel and each bias row when "
            "porting"
        )
    held = ", ".join(LSTM_GATES[i] for i in order)
    name = NAMED_ORDERS.get(order)
    return (
        f"the candidate's LSTM reads its gate blocks as i, f, g, o but they hold the "
        f"reference's {held}{f' ({name})' if name else ''}: its weights were copied in another "
        "gate order. PyTorch (weight_ih_l0 rows W_ii|W_if|W_ig|W_io), Keras (kernel columns "
        "i, f, c, o) and Flax's OptimizedLSTMCell (i, f, g, o) share one order; reorder the "
        "four blocks of kernel, recurrent_kernel and bias (torch's rows) when porting"
    )


def _biases(rec: Recurrent, cand=None):
    if rec.layer.kind != "lstm":
        return
    b = rec.weights["bias"]
    if rec.biases is not None:
        b_ih, b_hh = rec.biases
        if np.array_equal(b_ih, b_hh) and np.any(b_ih):
            yield None, {"bias": b_ih}, "ref-twice"
        yield None, {"bias": b_ih}, "bias_ih"
        yield None, {"bias": b_hh}, "bias_hh"
    yield None, {"bias": 2 * b}, "twice"
    if rec.biases is None and cand is not None and cand[0] == "lstm":
        # the reference holds one bias, the candidate PyTorch's two: the reference dropped one
        yield None, {"bias": b + cand[1][1]}, "ref-bias_ih"
        yield None, {"bias": b + cand[1][0]}, "ref-bias_hh"
    yield None, {"bias": np.zeros_like(b)}, "none"


BIAS_WORDS = {
    "bias_ih": "the candidate's LSTM bias is PyTorch's bias_ih_l0 alone: bias_hh_l0 was "
    "dropped. PyTorch adds both to every gate; a one-bias port (Keras, Flax) holds "
    "bias_ih_l0 + bias_hh_l0",
    "bias_hh": "the candidate's LSTM bias is PyTorch's bias_hh_l0 alone: bias_ih_l0 was "
    "dropped. PyTorch adds both to every gate; a one-bias port (Keras, Flax) holds "
    "bias_ih_l0 + bias_hh_l0",
    "twice": "the candidate's LSTM adds the reference's bias twice: one bias written into both "
    "of PyTorch's bias_ih_l0 and bias_hh_l0 (or their sum into both); write it into one and "
    "zeros into the other",
    "none": "the candidate's LSTM adds no bias where the reference's adds one (PyTorch's "
    "bias_ih_l0 + bias_hh_l0, Keras' and Flax's one bias)",
    "ref-twice": "the reference's PyTorch LSTM holds one bias in both bias_ih_l0 and "
    "bias_hh_l0 (adds it twice) where the candidate adds it once: the reference was written "
    "from a one-bias LSTM (Keras, Flax) with its bias in both; write it into one and zeros "
    "into the other",
    "ref-bias_ih": "the reference's LSTM bias is the candidate's bias_ih_l0 alone: the "
    "reference dropped PyTorch's bias_hh_l0 (the reference re-run with the candidate's "
    "bias_hh_l0 added). A one-bias port (Keras, Flax) holds bias_ih_l0 + bias_hh_l0",
    "ref-bias_hh": "the reference's LSTM bias is the candidate's bias_hh_l0 alone: the "
    "reference dropped PyTorch's bias_ih_l0 (the reference re-run with the candidate's "
    "bias_ih_l0 added). A one-bias port (Keras, Flax) holds bias_ih_l0 + bias_hh_l0",
}


def _bias_words(rec: Recurrent, what: str) -> str:
    return BIAS_WORDS[what]


def _reset_forms(rec: Recurrent, cand=None):
    if rec.layer.kind != "gru":
        return
    b = rec.weights["bias"]
    split = cand[1] if cand is not None and cand[0] == "gru" else None  # (2, 3u): PyTorch's
    if rec.layer.reset_after:
        flipped = GRU(rec.layer.units, return_sequences=True, reset_after=False)
        yield flipped, {"bias": b[0] + b[1]}, "before"
        yield flipped, {"bias": b[0]}, "before"
        u = rec.layer.units
        gates = np.concatenate([b[1][: 2 * u], np.zeros(u)])
        yield None, {"bias": np.stack([b[0] + gates, np.zeros_like(b[1])])}, "flax"
        yield None, {"bias": np.stack([b[0] + b[1], np.zeros_like(b[1])])}, "flax-moved"
        if split is not None and not np.any(b[1]):  # Flax's form against PyTorch's b_hn
            yield None, {"bias": np.stack([b[0] - split[1], split[1]])}, "flax-ref"
    else:
        after = GRU(rec.layer.units, return_sequences=True, reset_after=True)
        yield after, {"bias": np.stack([b, np.zeros_like(b)])}, "after"
        if split is not None:  # the one bias the sum of the candidate's two
            yield after, {"bias": np.stack([b - split[1], split[1]])}, "after-split"


AFTER = (
    "(n = tanh(W_in x + b_in + r * (U_n h + b_hn)): Keras' default reset_after=True, PyTorch's "
    "and cuDNN's only form)"
)
BEFORE = "(n = tanh(W_in x + U_n (r * h)): Keras reset_after=False, the original paper)"
RESET_WORDS = {
    "before": "the candidate's GRU applies the reset gate before the recurrent matmul "
    f"{BEFORE} where the reference's applies it after {AFTER}",
    "after": "the candidate's GRU applies the reset gate after the recurrent matmul "
    f"{AFTER} where the reference's applies it before {BEFORE}",
    "after-split": "the candidate's GRU applies the reset gate after the recurrent matmul "
    f"{AFTER} where the reference's applies it before {BEFORE}; the reference's one bias is "
    "the sum of the candidate's bias_ih_l0 and bias_hh_l0 (re-run with the candidate's "
    "bias_hh_l0 as its recurrent row)",
    "flax": "the candidate's GRU has no recurrent bias inside the reset product (n = "
    "tanh(W_in x + b_in + r * U_n h): Flax nnx.GRUCell, whose dense_h has no bias) where the "
    "reference's adds b_hn there (PyTorch nn.GRU, Keras reset_after=True); b_hn was dropped",
    "flax-moved": "the candidate's GRU has no recurrent bias inside the reset product (Flax "
    "nnx.GRUCell, whose dense_h has no bias): b_hn was added to the input bias, outside the "
    "product (n = tanh(W_in x + b_in + b_hn + r * U_n h)), where the reference's adds it "
    "inside (PyTorch nn.GRU, Keras reset_after=True)",
    "flax-ref": "the reference's GRU has no recurrent bias inside the reset product (n = "
    "tanh(W_in x + b_in + r * U_n h): Flax nnx.GRUCell, whose dense_h has no bias) where the "
    "candidate's adds its bias_hh_l0's b_hn there (PyTorch nn.GRU): re-run with the "
    "candidate's recurrent bias row",
}
"""The words of each GRU form, by what the alternative was."""


def _reset_words(rec: Recurrent, what: str) -> str:
    return RESET_WORDS[what]


CAUSES = (
    Cause(
        "lstm-gate-order",
        "forward",
        ("lstm", "gru", "module"),
        "LSTM or GRU weights copied in another gate-block order (LSTM in PyTorch, Keras, Flax: "
        "i, f, g(c), o; TensorFlow 1's LSTMCell: i, j, f, o; GRU: PyTorch r, z, n, Keras z, "
        "r, h)",
        _test(_gate_orders, _gate_words),
    ),
    Cause(
        "lstm-bias",
        "forward",
        ("lstm", "module"),
        "PyTorch's two LSTM biases: one dropped (bias_ih_l0 only) or the bias added twice",
        _test(_biases, _bias_words),
    ),
    Cause(
        "gru-reset-after",
        "forward",
        ("gru", "module"),
        "GRU reset gate before the recurrent matmul (Keras reset_after=False) or after it "
        "(Keras default, PyTorch, cuDNN); Flax nnx.GRUCell has no recurrent bias there",
        _test(_reset_forms, _reset_words),
    ),
)
