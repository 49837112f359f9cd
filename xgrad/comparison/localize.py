"""Where a model read module by module first parts from the reference (tier (a)).

A module whose output differs is not necessarily where the difference starts: its inputs may
already differ, because of code that runs between modules (a residual addition, an
activation called as a function, a reshape) in the module that calls it. So:

* **forward**: the first module, in the order calls finish, whose output differs is looked
  at; if its inputs agree with the reference's, the difference starts in it: a module that
  calls none is named itself; one that calls others is followed into the first of them whose
  output differs, and, when none does, the difference is in its own code after its last
  submodule. If its inputs already differ, the difference is in the code of the module that
  calls it, before it (named with both).
* **backward** (every output agrees): from the output back, the first module whose
  ``dL/d output`` or whose own parameters' gradients differ.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from xgrad.comparison.entries import Comparison
from xgrad.metrics import OK_STATUSES
from xgrad.pairing.params import regroups
from xgrad.report import Divergence, Entry, LayerEntry

__all__ = ["module_divergence"]


def _bad(m) -> bool:
    return m is not None and m.status not in OK_STATUSES


def _inputs_agree(c: Comparison, side, r, k) -> bool | None:
    """Whether the paired units' floating inputs agree on both sides (normwise, to the
    tolerance times 10 for rounding carried in; a group's are its first module's; the first
    of each when their numbers differ), ``None`` when they cannot be compared."""
    ref_in = (c.ref.grads.module_inputs or {}).get(r.start or r.path)
    cand_in = (side.grads.module_inputs or {}).get(k.start or k.path)
    if not ref_in or not cand_in:
        return None
    if len(ref_in) != len(cand_in):  # (q, k, v) against one x: the first of each
        ref_in, cand_in = ref_in[:1], cand_in[:1]
    for a, b in zip(ref_in, cand_in, strict=True):
        if regroups(np.shape(b)[1:], np.shape(a)[1:]):  # (T, H, hd) against (T, d)
            b = np.reshape(b, np.shape(a))
        if np.shape(a) != np.shape(b):
            return None
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        den = float(np.linalg.norm(a64))
        diff = float(np.linalg.norm(b64 - a64))
        if not np.isfinite(diff) or diff > 10 * c.tol * max(den, 1e-30):
            return False
    return True


def _scope(c: Comparison, pairs, r) -> str | None:
    """The nearest paired module that ``r`` is called from (through containers that pair
    with nothing: Hugging Face's ``LlamaModel`` around blocks a port calls from the model
    itself), ``None`` for the model."""
    paired = {pr.path for pr, _ in pairs}
    scope = r.info.scope
    while scope is not None and scope not in paired:
        try:
            scope = c.ref.model.module(scope).scope
        except (AttributeError, KeyError):
            return None
    return scope


def _children(c: Comparison, pairs, path: str) -> list:
    return [(r, k) for r, k in pairs if r.path != path and _scope(c, pairs, r) == path]


def _at(side, r, k, where: str, detail: str, between=None) -> Divergence:
    names = {"reference": r.info.name or "(the model)", side.label: k.info.name or "(the model)"}
    return Divergence(side.label, r.path, where, names, detail, between)


def _code(where: str, between: dict | None, side) -> str:
    """The words for code that parts before the submodule ``where``."""
    if between is None:
        return f"the code in it before {where} (the inputs of {where} already differ)"
    before = between["reference"][0] or "(the model)"
    return (
        f"the code in it between {before} and {where} (the output of {before} agrees, the "
        f"input of {where} differs)"
    )


def _between(c: Comparison, side, pairs, layers, scope: str, cr, ck) -> dict | None:
    """The submodules around the code that parts in ``scope``: the last paired one before
    ``cr`` (its output agrees, and has the shape ``cr``'s input has), and ``cr``."""
    previous = None
    for pr, pk in _children(c, pairs, scope):
        if pr.path == cr.path:
            break
        entry = layers.get(pr.path)
        if entry is not None and not _bad(entry.forward.get(side.label)):
            previous = (pr, pk)
    if previous is None:
        return None
    return {
        "reference": (previous[0].end, cr.start or cr.path),
        side.label: (previous[1].end, ck.start or ck.path),
    }


def _alone(c: Comparison, side, ref_scope: str, cand_scope: str) -> str:
    """``; on one side only there: ...`` naming the modules called from the two scopes that
    pair with nothing (a layer the port lacks, or computes as code)."""
    found = []
    for which, path, what in getattr(c.alignments[side.label], "unpaired_modules", ()):
        model = c.ref.model if which == "reference" else side.model
        try:
            info = model.module(path)
        except (AttributeError, KeyError):
            continue
        if info.scope == (ref_scope if which == "reference" else cand_scope):
            found.append(f"{which} {path} ({what.split(',')[0]})")
    return f"; on one side only there: {', '.join(found)}" if found else ""


def _follow(c, side, pairs, layers, r, k, agree: bool | None = True) -> Divergence:
    """The unit ``r`` (inputs agree, output differs): itself, or the first of its
    submodules whose output differs, followed down."""
    for cr, ck in _children(c, pairs, r.path):
        entry = layers.get(cr.path)
        if entry is None or not _bad(entry.forward.get(side.label)):
            continue
        inner = _inputs_agree(c, side, cr, ck)
        if inner is False:
            where = cr.info.name or cr.path
            between = _between(c, side, pairs, layers, r.path, cr, ck)
            detail = _code(where, between, side) + _alone(c, side, r.path, k.path)
            return _at(side, r, k, "forward", detail, between)
        return _follow(c, side, pairs, layers, cr, ck, inner)
    if _children(c, pairs, r.path):
        return _at(
            side,
            r,
            k,
            "forward",
            "its own code after its submodules (theirs agree)" + _alone(c, side, r.path, k.path),
        )
    if agree is None:
        return _at(
            side,
            r,
            k,
            "forward",
            "its output (its inputs could not be compared with the reference's)",
        )
    return _at(side, r, k, "forward", "its own computation (its inputs agree)")


def module_divergence(
    c: Comparison, side, layers: Mapping[str, LayerEntry], by_name: Mapping[str, Entry]
) -> Divergence | None:
    """Where ``side`` first parts from the reference (see the module docstring), or
    ``None``."""
    pairs = c.alignments[side.label].pairs
    for r, k in pairs:
        entry = layers.get(r.path)
        if entry is None or not _bad(entry.forward.get(side.label)):
            continue
        agree = _inputs_agree(c, side, r, k)
        while agree is False and (scope := _scope(c, pairs, r)) is not None:
            found = next((pr, pk) for pr, pk in pairs if pr.path == scope)
            if _inputs_agree(c, side, *found) is False:
                r, k = found  # the scope's own inputs differ: the code parts further up
                continue
            where = r.info.name or r.path
            between = _between(c, side, pairs, layers, scope, r, k)
            detail = _code(where, between, side) + _alone(c, side, *(f.path for f in found))
            return _at(side, *found, "forward", detail, between)
        return _follow(c, side, pairs, layers, r, k, agree)
    for r, k in reversed(pairs):
        entry = layers.get(r.path)
        if entry is None:
            continue
        prefix = f"{r.path}." if r.path else ""
        own = [by_name.get(f"{prefix}{local}") for local in r.info.params]
        if _bad(entry.backward.get(side.label)) or any(
            e is not None and _bad(e.results.get(side.label)) for e in own
        ):
            return _at(side, r, k, "backward", "its gradients (its outputs agree)")
    return None
