"""Recurrent modules paired through their frameworks' documented layouts, where the values
do not decide.

:mod:`xgrad.pairing.blocks` and :mod:`xgrad.pairing.sums` pair a recurrent layer's arrays by
their values: a port whose arrays hold the other side's with the gate blocks permuted, or a
bias holding the sum of PyTorch's two. A freshly initialised port (``transfer=True``, or
``transfer="auto"`` against an unrelated initialisation) shows neither: its values are
unrelated. Its kernels would then pair as they stand (transposed only) and a transfer would
write Keras' ``z, r, h`` blocks into torch's ``r, z, n`` rows. Where both modules are
recurrent modules of a framework class whose layout is documented, that layout decides:

=================================  ======================  ==========================
module (class; local names)        gate blocks             biases
=================================  ======================  ==========================
torch ``nn.LSTM`` (``weight_ih_l0  rows ``i, f, g, o``     ``bias_ih_l0 + bias_hh_l0``
(4u, F)``, ``weight_hh_l0``, ...)                          (both added)
torch ``nn.GRU``                   rows ``r, z, n``        ``bias_ih_l0``, ``bias_hh_l0``
Keras ``LSTM``/``LSTMCell``        columns ``i, f, c, o``  one ``bias (4u,)``
(``kernel (F, 4u)``, ...)
Keras ``GRU``/``GRUCell``, and     columns ``z, r, h``     ``bias (2, 3u)`` (input,
xgrad's Flax GRU cell                                      recurrent) with reset_after
=================================  ======================  ==========================

(PyTorch's ``n`` and ``g``, Keras' ``h`` and ``c`` are the same gate: the candidate state.)
Kernels pair through the permutation of their gate blocks (:class:`~.blocks.BlockOrder`);
LSTM biases as a :class:`~.sums.Sum`; a GRU's two torch biases as Keras' stacked one
(``BlockSplit`` or a :class:`~.blocks.BlockOrder` over a stack). The values
still win: this runs only when none of the pair's recurrent arrays was paired by its values
(held as it stands, permuted or summed), so a port that copied the blocks in the other
side's order stays paired as it stands and its comparison shows the slip (the diagnosis
names ``lstm-gate-order``). A Keras GRU with ``reset_after=False`` (one ``(3u,)`` bias)
computes another function than torch's GRU and is left as the values left it. Flax's
``OptimizedLSTMCell`` (one Linear per gate) is not covered.
"""

from __future__ import annotations

import numpy as np

from xgrad.pairing.blocks import BlockOrder, _held, _record
from xgrad.pairing.params import Join, ParamPairing, Values, last
from xgrad.pairing.sums import Sum

__all__ = ["KNOWN_NOTE", "known_note", "pair_known"]

KNOWN_NOTE = (
    "paired by the frameworks' documented gate orders (the values do not show them: an "
    "unrelated initialisation): {listed}; torch orders the LSTM gates i, f, g, o and the GRU "
    "gates r, z, n with two biases (bias_ih, bias_hh, added for the LSTM), Keras i, f, c, o "
    "and z, r, h with one bias ((2, 3u): input, recurrent, for a GRU with reset_after)"
)

# the gates of each layout in storage order, named alike across frameworks
_GATES = {
    ("torch", "lstm"): ("input", "forget", "cell", "output"),
    ("torch", "gru"): ("reset", "update", "new"),
    ("keras", "lstm"): ("input", "forget", "cell", "output"),
    ("keras", "gru"): ("update", "reset", "new"),
}
_TYPES = {
    "lstm": {"LSTM", "LSTMCell"},
    "gru": {"GRU", "GRUCell"},
}
_TORCH = {"weight_ih_l0": "input", "weight_hh_l0": "recurrent", "bias_ih_l0": "bias_input"}
_TORCH["bias_hh_l0"] = "bias_recurrent"
_KERAS = {"kernel": "input", "recurrent_kernel": "recurrent", "bias": "bias"}


def _layout(types: set[str], names: list[tuple[str, tuple]]) -> tuple[str, str, dict] | None:
    """``(framework, cell, role -> (name, shape))`` of one module's recurrent arrays, or
    ``None`` when its class and local names are not one of the documented layouts."""
    cell = next((c for c, known in _TYPES.items() if types & known), None)
    if cell is None:
        return None
    locals_ = {last(n): (n, tuple(s)) for n, s in names}
    for framework, roles in (("torch", _TORCH), ("keras", _KERAS)):
        if set(locals_) == set(roles):
            return framework, cell, {roles[k]: v for k, v in locals_.items()}
    return None


def _decided(roles_r: dict, roles_c: dict, acc: ParamPairing, values: Values) -> bool:
    """Whether any of the arrays was paired by its values (see the module docstring)."""
    names_r = {n for n, _ in roles_r.values()}
    names_c = {n for n, _ in roles_c.values()}
    if any(n in acc.joins or n in acc.splits for n in names_r):
        return True
    if any(names_r & set(s.refs) or names_c & set(s.cands) for s in acc.sums):
        return True
    for rn in names_r & set(acc.names):
        r = values.array("reference", rn)
        c = values.array("candidate", acc.names[rn])
        if r is None or c is None:
            continue
        layout = acc.layouts.get(rn)
        back = np.asarray(c) if layout is None else np.transpose(c, np.argsort(layout))
        if np.ptp(np.asarray(r, np.float64)) > 0 and _held(np.asarray(r, np.float64), back):
            return True
    return False


def _free(acc: ParamPairing, rn: str, cn: str) -> None:
    acc.names.pop(rn, None)
    acc.layouts.pop(rn, None)
    for name, taken in list(acc.names.items()):
        if taken == cn:
            del acc.names[name]
            acc.layouts.pop(name, None)
    acc.why.pop(rn, None)
    acc.why.pop(cn, None)


def _kernel(rn, r_shape, cn, c_shape, fws, order, acc: ParamPairing) -> bool:
    """Pair one kernel through its gate blocks (``fws``: the two sides' frameworks);
    ``False`` if the shapes do not fit."""
    fw_r, fw_c = fws
    transposed = fw_r != fw_c
    layout = (1, 0) if transposed else None
    if (tuple(reversed(r_shape)) if transposed else tuple(r_shape)) != tuple(c_shape):
        return False
    _free(acc, rn, cn)
    along = 0 if fw_r == "torch" else 1
    if order == tuple(range(len(order))):
        acc.names[rn] = cn
        if layout is not None:
            acc.layouts[rn] = layout
    else:
        inner = None if layout is None else Join((cn,), 0, (layout,))
        acc.joins[rn] = BlockOrder((cn,), 0, (None,), along=along, order=order, inner=inner)
    return True


def _biases(fw_r, roles_r, roles_c, cell, order, acc: ParamPairing) -> list[str]:
    """Pair the biases by the documented layout; the reference names paired."""
    torch_roles, keras_roles = (roles_r, roles_c) if fw_r == "torch" else (roles_c, roles_r)
    two = [torch_roles["bias_input"], torch_roles["bias_recurrent"]]
    one_name, one_shape = keras_roles["bias"]
    n = two[0][1][0]
    if cell == "lstm":
        if one_shape != (n,):
            return []
        parts = tuple(p for p, _ in two)
        for p in (*parts, one_name):
            _free(acc, p, p)
        refs, cands = (parts, (one_name,)) if fw_r == "torch" else ((one_name,), parts)
        acc.sums.append(Sum(refs, cands, None))
        return list(refs)
    if one_shape != (2, n):  # a GRU with reset_after=False: another function
        return []
    parts = [p for p, _ in two]
    for p in (*parts, one_name):
        _free(acc, p, p)
    side = "candidate" if fw_r == "torch" else "reference"
    _record(side, one_name, one_shape, parts, (n,), 0, order, acc)
    return parts if fw_r == "torch" else [one_name]


def pair_known(r_types, c_types, all_r, all_c, left_r, left_c, acc, values) -> list[str]:
    """Within one pair of modules, pair the recurrent arrays by their frameworks' documented
    layouts where the values did not (see the module docstring), removing those paired from
    ``left_r`` and ``left_c``.

    Args:
        r_types, c_types: the class names of each module and its descendants.
        all_r, all_c: every ``(name, shape)`` of the modules' parameters, each side.
        left_r, left_c: those left unpaired so far.
        acc: the pairing being made.
        values: both models' arrays.

    Returns:
        The reference names paired so (empty: nothing was).
    """
    found_r, found_c = _layout(set(r_types), all_r), _layout(set(c_types), all_c)
    if found_r is None or found_c is None or found_r[:2] == found_c[:2]:
        return []
    (fw_r, cell, roles_r), (fw_c, cell_c, roles_c) = found_r, found_c
    if cell != cell_c or _decided(roles_r, roles_c, acc, values):
        return []
    gates_r, gates_c = _GATES[fw_r, cell], _GATES[fw_c, cell]
    order = tuple(gates_r.index(g) for g in gates_c)
    paired = []
    for role in ("input", "recurrent"):
        (rn, rs), (cn, cs) = roles_r[role], roles_c[role]
        if _kernel(rn, rs, cn, cs, (fw_r, fw_c), order, acc):
            paired.append(rn)
    paired += _biases(fw_r, roles_r, roles_c, cell, order, acc)
    taken_c = {n for n, _ in roles_c.values()}
    left_r[:] = [x for x in left_r if x[0] not in paired]
    left_c[:] = [x for x in left_c if x[0] not in taken_c or _still_free(x[0], acc)]
    return paired


def _still_free(cn: str, acc: ParamPairing) -> bool:
    if cn in acc.names.values() or any(cn in j.parts for j in acc.joins.values()):
        return False
    if any(cn == s.whole for s in acc.splits.values()):
        return False
    return not any(cn in s.cands for s in acc.sums)


def known_note(paired: list[str], native: dict[str, str]) -> str | None:
    """What the report says of the arrays paired by the documented layouts."""
    if not paired:
        return None
    return KNOWN_NOTE.format(listed=", ".join(native.get(n, n) for n in paired))
