"""The reading phase of a comparison between two models: read both, pair them, and give the
candidate the reference's weights where it should have them.

:func:`read_pair` is shared by :func:`xgrad.compare_models`, :func:`xgrad.convert`
(``into=``) and :func:`xgrad.compare_training`: each reads a user's reference and candidate
the same way and gets the same notes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from xgrad.align import Alignment, align, units
from xgrad.errors import AlignmentError, FrameworkError, InputError, XgradError
from xgrad.frameworks.base import AbstractModel
from xgrad.frameworks.capture import Batch, CapturedModel, as_batch
from xgrad.frameworks.registry import capture_model, read_model

__all__ = [
    "READS",
    "ModelPair",
    "ModulesUnsupported",
    "NoCommonReading",
    "input_shape_of",
    "loaded_from",
    "model_text",
    "pairing_notes",
    "read_pair",
    "transfer",
]


def input_shape_of(x) -> tuple[int, ...] | None:
    """The shape of one example of a batch ``x`` (``None`` for fewer than two axes)."""
    shape = np.shape(x)
    return tuple(shape[1:]) if len(shape) >= 2 else None


def model_text(model: AbstractModel) -> str:
    """The model in short text form (``10 -> 8:relu -> ...``), ``?`` where unknown."""
    shape = model.input_shape
    dims = str(shape[0]) if len(shape) == 1 else "x".join(map(str, shape))
    return " -> ".join([dims, *(info.describe() for info in model.layers)])


LOADED_REL = 1e-2
"""How close a candidate's array must be to one of the reference's (normwise) to count as
loaded from it: a cast to another dtype and back stays far inside."""


class _Pool:
    """The reference's informative arrays, searched for one a candidate array holds.

    A match needs ``rel(b, other) <= LOADED_REL``; two necessary conditions come first, each
    far cheaper than the full difference: equal shapes (or transposed, for matrices), and
    norms within ``LOADED_REL`` of each other (the triangle inequality). On a 134M-parameter
    model the full differences of every candidate array against every reference array of its
    shape took 216 s of a 260 s ``compare_models``.
    """

    def __init__(self, arrays) -> None:
        self.arrays = [a for a in arrays if a.size > 1 and np.ptp(a) > 0]
        self.norms = [float(np.linalg.norm(a)) for a in self.arrays]

    def holds(self, b: np.ndarray, first: np.ndarray | None = None) -> bool:
        """Whether ``b`` is one of the arrays (or a matrix of them transposed), ``first``
        (its paired array) tried before the others."""
        from xgrad.identify import rel

        norm_b = float(np.linalg.norm(b))
        candidates = [(first, float(np.linalg.norm(first)))] if first is not None else []
        candidates += list(zip(self.arrays, self.norms, strict=True))
        for other, norm in candidates:
            if abs(norm_b - norm) > LOADED_REL * norm:
                continue
            if other.shape == b.shape and rel(b, other) <= LOADED_REL:
                return True
            if other.ndim == 2 and other.T.shape == b.shape and rel(b, other.T) <= LOADED_REL:
                return True
        return False


def loaded_from(ref: AbstractModel, cand: AbstractModel, alignment: Alignment) -> str | None:
    """Whether the candidate's weights came from the reference's: how many of the
    reference's non-constant arrays it holds, in place, transposed or at another place
    (``None``: none of them, an unrelated initialisation). Each array is tried against its
    paired one first, so a candidate holding the reference's weights in place costs one
    difference per array."""
    ref_w = {k: np.asarray(v, np.float64) for k, v in ref.weights().items()}
    cand_w = {k: np.asarray(v, np.float64) for k, v in cand.weights().items()}
    pool = _Pool(ref_w.values())
    found = informative = 0
    for ref_name, cand_name in alignment.names.items():
        a, b = ref_w.get(ref_name), cand_w.get(cand_name)
        if a is None or b is None or a.size < 2 or np.ptp(a) == 0:
            continue
        informative += 1
        found += pool.holds(b, first=a)
    reshaped = [*getattr(alignment, "joins", {}), *getattr(alignment, "splits", {})]
    for ref_name in reshaped:  # paired through a split or a reshape: in the reference's shape
        a, b = ref_w.get(ref_name), alignment.candidate_value(ref_name, cand_w)
        if a is None or b is None or a.size < 2 or np.ptp(a) == 0:
            continue
        informative += 1
        found += pool.holds(np.asarray(b), first=a)
    return f"{found} of {informative} arrays" if found else None


@dataclass
class ModelPair:
    """Two read models, paired.

    Attributes:
        reference: the reference model.
        candidate: the candidate (a copy holding the reference's weights after
            :func:`transfer` copied them).
        alignment: how the candidate's units and weights correspond to the reference's.
        notes: what the readers and the pairing noticed (layers in training mode, per-layer
            localisation unavailable, ...), each naming its side.
        transferred: whether the reference's weights were copied into the candidate.
        tier: ``"layers"``: both read completely into xgrad's layer kinds (tier (b)), or
            ``"modules"``: both read module by module (tier (a)).
        batch: the inputs as the user passed them (``None`` when no ``x`` was given).
    """

    reference: AbstractModel
    candidate: AbstractModel
    alignment: Alignment
    notes: list[str] = field(default_factory=list)
    transferred: bool = False
    tier: str = "layers"
    batch: Batch | None = None


class ModulesUnsupported(FrameworkError):
    """A model's framework does not read models module by module.

    Attributes:
        side: ``"reference"`` or ``"candidate"``: which model.
    """

    def __init__(self, message: str, side: str = "") -> None:
        super().__init__(message)
        self.side = side


class NoCommonReading(AlignmentError):
    """Two models share no way of being read: one reads only as layers of xgrad's kinds (a
    pure JAX function: it has no modules to capture) and the other not as layers, or a
    model reads neither way. Nothing is compared; the message names both reasons and the
    fix."""


READS = ("auto", "layers", "modules")
"""How :func:`read_pair` reads: ``auto`` into xgrad's layer kinds when both models read
completely (unless both are users' models of token-wise layers only on examples ``(tokens,
d)``: :func:`_token_wise_only`), else module by module; ``layers`` or ``modules`` only that
way."""


def _sides(value, what: str) -> dict[str, object]:
    """``value`` for each side: one value for both, or ``{"reference": ..., "candidate":
    ...}``."""
    if isinstance(value, Mapping):
        unknown = set(value) - {"reference", "candidate"}
        if unknown:
            raise InputError(
                f"{what} as a dict takes the keys 'reference' and 'candidate', got "
                f"{', '.join(map(repr, sorted(unknown)))}"
            )
        return {"reference": value.get("reference"), "candidate": value.get("candidate")}
    return {"reference": value, "candidate": value}


def _check_training(value) -> dict[str, bool | None]:
    sides = _sides(value, "training")
    for side, v in sides.items():
        if v is not None and not isinstance(v, bool):
            raise InputError(
                f"training must be True, False, None or {{'reference': ..., 'candidate': ...}}, "
                f"got {v!r} for the {side}"
            )
    return sides


def read_pair(
    reference,
    candidate,
    x=None,
    *,
    mapping: str | Mapping[str, str] = "auto",
    read: str = "auto",
    output=None,
    training=None,
    apply_kwargs=None,
) -> ModelPair:
    """Read two models and pair them: into xgrad's layer kinds where both read completely
    (tier (b), :func:`xgrad.read_model`), else module by module (tier (a),
    :mod:`xgrad.frameworks.capture`, paired by :func:`xgrad.pairing.pair_modules`).

    Args:
        reference, candidate: the models (an ``AbstractModel`` is taken as it is).
        x: the inputs as the user passes them (one array, a tuple or a dict of arrays):
            they tell the readers the input shape.
        mapping: ``"auto"`` or ``{reference name: candidate name}`` (layers, modules or
            parameters).
        read: one of :data:`READS`.
        output: which of each model's outputs the loss sees (module by module only;
            ``None``: the first floating tensor); one value, or one per side as a dict.
        training: the mode each model computes in (``None``: as the user set it); one value,
            or one per side as a dict (module by module only).
        apply_kwargs: keyword arguments of the models' calls beside their inputs (Linen's
            ``{"train": False}``); one dict, or one per side (module by module only).

    Raises:
        AlignmentError: the models cannot be paired in the tier asked for.
        InputError: an object no framework reads, or a malformed argument.
    """
    if read not in READS:
        raise InputError(f"read must be one of {', '.join(READS)}, got {read!r}")
    for side, obj in (("reference", reference), ("candidate", candidate)):
        if isinstance(obj, type):
            raise InputError(
                f"the {side} is the class {obj.__name__}, not a model: pass an instance "
                f"({obj.__name__}(...))"
            )
    modes = _check_training(training)
    outputs = _sides(output, "output")
    calls = _call_kwargs(apply_kwargs)
    batch = None if x is None else as_batch(x)
    # models read already into layer kinds (xgrad's builds) take one input, floats or token
    # ids, only that way: module by module needs a user's object to capture
    built = all(
        isinstance(obj, AbstractModel) and not isinstance(obj, CapturedModel)
        for obj in (reference, candidate)
    )
    plain = batch is None or (batch.names == ("input",) and (batch.floating == ("input",) or built))
    custom = any(v is not None for v in (*modes.values(), *outputs.values(), *calls.values()))
    why = None
    layers_error = None
    if read == "layers" or (read == "auto" and plain and not custom):
        try:
            models = _read_both(reference, candidate, batch)
        except XgradError as exc:
            if read == "layers" or batch is None:
                raise
            layers_error = exc
            # the reader's problem without its advice (a Flatten, an input_shape=): module
            # by module, that advice does not apply
            problem = str(exc).split("; ")[0]
            why = f"not every layer could be read as one of xgrad's kinds: {problem}"
        else:
            unread = [
                f"{m.description}: {m.structure_error}"
                for m in models
                if getattr(m, "structure_error", None) and not units(m.layers)
            ]
            tokens = read == "auto" and _token_wise_only(reference, candidate, models)
            if not (read == "auto" and unread and mapping == "auto") and not tokens:
                try:
                    pair = _pair_layers(*models, mapping)
                except AlignmentError as exc:
                    if read == "layers":  # a structural difference is the user's to fix
                        raise
                    options = (outputs, modes, calls)
                    return _modules_instead(reference, candidate, batch, mapping, options, exc)
                pair.batch = batch
                return pair
            if tokens:
                why = (
                    f"token-wise modules only, on examples of shape {models[0].input_shape}: "
                    "each module, and the code between two, is compared under its own name"
                )
                try:
                    return _read_modules(
                        reference, candidate, batch, mapping, (outputs, modes, calls), why
                    )
                except ModulesUnsupported:
                    pair = _pair_layers(*models, mapping)
                    pair.batch = batch
                    return pair
            # read, but into no layer (shared weights, branches): module by module instead,
            # and where the frameworks cannot, the layers' own refusal
            why = f"not every layer could be read as one of xgrad's kinds: {unread[0]}"
            layers_error = models
    elif read == "auto":
        why = (
            "the inputs are not one floating array"
            if not plain
            else ("output=, training= or apply_kwargs= was given")
        )
    try:
        return _read_modules(reference, candidate, batch, mapping, (outputs, modes, calls), why)
    except ModulesUnsupported as exc:
        if read == "modules":
            raise
        return _layers_instead(reference, candidate, batch, mapping, exc, layers_error, custom)


def _layers_instead(reference, candidate, batch, mapping, unsupported, tried, custom) -> ModelPair:
    """Read two models as layers because one of them cannot be read module by module
    (``unsupported``: a pure JAX function has no modules to capture), or refuse.

    ``tried`` is what reading them as layers gave already: the reader's refusal (raised as
    it is: it names the input or kernel to fix), both models read (one into no layer), or
    ``None``: not tried (token ids, or ``output=``/``training=``/``apply_kwargs=`` given), so
    each side is read now. Where they cannot be paired as layers either, a
    :class:`NoCommonReading` names both reasons (a model read into no layer: the layer
    pairing's words, naming ``mapping=``)."""
    if isinstance(tried, XgradError):
        raise tried from None
    sides = {"reference": reference, "candidate": candidate}
    errors: dict[str, str] = {}
    models = tried
    if custom:
        errors["both"] = (
            "output=, training= and apply_kwargs= are options of reading module by module"
        )
    elif models is None:
        models = _read_each(sides, batch, errors, opaque=mapping == "auto")
    if not errors:
        try:
            pair = _pair_layers(*models, mapping)
        except XgradError as exc:
            unread = [
                side
                for side, m in zip(sides, models, strict=True)
                if getattr(m, "structure_error", None) and not units(m.layers)
            ]
            if not unread:  # both read, into layers that do not pair
                raise _unchecked(exc, unsupported) from None
            errors[unread[0]] = str(exc)  # with its advice: mapping= pairs parameters
        else:
            pair.batch = batch
            pair.notes.insert(
                0,
                f"read as layers of xgrad's kinds: the {unsupported.side} cannot be read "
                f"module by module ({unsupported})",
            )
            return pair
    raise NoCommonReading(_no_common_text(sides, unsupported, errors))


def _read_each(sides, batch, errors: dict[str, str], opaque: bool) -> tuple[AbstractModel, ...]:
    """Each side read as layers on its own, so that a refusal names its side; the reasons
    (the readers' words without their advice) go to ``errors``, and so, where ``opaque``
    (no ``mapping=`` of parameters to pair it by), does why a model read into no layer
    (a pure JAX function with a position table: it is no chain of xgrad's kinds)."""
    shape = input_shape_of(batch.args[0]) if batch.args else None
    models = []
    for side, obj in sides.items():
        try:
            models.append(read_model(obj, input_shape=shape))
        except XgradError as exc:
            errors[side] = str(exc).split("; ")[0]
            continue
        why = getattr(models[-1], "structure_error", None)
        if opaque and why and not units(models[-1].layers):
            errors[side] = why.split("; ")[0]
    return tuple(models)


_DIFFER = "; the models differ in structure here"
"""The layer pairing's words for a difference in structure (:mod:`xgrad.align`), which
:func:`_as_read` qualifies: one reading of a model may not be what it computes."""


def _as_read(exc: XgradError, then: str) -> str:
    """The layer pairing's refusal, said of the two readings, not of the models, and what
    was then tried (``then``)."""
    text = str(exc).replace(_DIFFER, ": so read, they differ in structure here")
    return f"read as layers of xgrad's kinds, the two models do not pair ({text}); {then}"


def _modules_instead(reference, candidate, batch, mapping, options, exc) -> ModelPair:
    """Read two models module by module because, read as layers, they do not pair (``exc``:
    a depth or a structure that differs). A reader may read a model into layers that are
    not what it computes (torch's ``nn.TransformerEncoderLayer``, whose attention the hooks
    saw only as code between modules), so the layers' refusal stands only where module by
    module agrees: its pairing refuses too, or leaves parameters unpaired. Where the models
    cannot be read module by module, the refusal says so and is said of the readings."""
    if batch is None:
        raise AlignmentError(
            _as_read(exc, "pass x, the inputs, to read both module by module instead")
        ) from None
    why = f"read as layers of xgrad's kinds, the two do not pair: {str(exc).split('; ')[0]}"
    try:
        pair = _read_modules(reference, candidate, batch, mapping, options, why)
    except ModulesUnsupported as unsupported:
        raise _unchecked(exc, unsupported) from None
    except AlignmentError:  # module by module they do not pair either: as the layers said
        raise exc from None
    except XgradError as other:
        raise AlignmentError(
            _as_read(
                exc,
                f"reading them module by module failed too ({other}); read='modules' reads "
                "them only that way and shows where",
            )
        ) from None
    if pair.alignment.unpaired:  # module by module agrees: weights without a counterpart
        raise exc from None
    return pair


def _unchecked(exc: XgradError, unsupported: ModulesUnsupported) -> AlignmentError:
    """The layers' refusal where one model cannot be read module by module to check it."""
    return AlignmentError(
        _as_read(
            exc,
            f"the {unsupported.side} cannot be read module by module ({unsupported}), so this "
            "could not be checked that way. If a layer listed is not what its model computes "
            "(an activation(?) where the model has weights), write the function as an "
            "nnx.Module whose parts are modules and pass read='modules'; if the models differ, "
            "make them equal or pass mapping={reference layer: candidate layer}",
        )
    )


def _what(obj) -> str:
    """A model in a few words: ``(apply_fn, params)`` for a function, else its class."""
    if isinstance(obj, tuple) and obj and callable(obj[0]):
        return f"({getattr(obj[0], '__name__', 'apply_fn')}, params)"
    return type(obj).__name__


def _no_common_text(sides, unsupported: ModulesUnsupported, errors: dict[str, str]) -> str:
    """The refusal: which side reads neither way or which two ways differ, and the fix."""
    side = unsupported.side or "reference"
    other = "candidate" if side == "reference" else "reference"
    head = f"the {side}, {_what(sides[side])}, cannot be read module by module ({unsupported})"
    if side in errors or "both" in errors:
        why = errors.get(side) or errors["both"]
        body = f"{head}, nor as layers of xgrad's kinds ({why})"
    else:
        body = (
            f"{head}, only as layers of xgrad's kinds, and the {other}, "
            f"{_what(sides[other])}, not as layers ({errors[other]}), only module by module: "
            "xgrad compares two models read the same way, so nothing was compared"
        )
    fix = (
        f"{body}. Fix: write the function as an nnx.Module whose parts are modules "
        "(nnx.Embed, nnx.LinearGeneral, nnx.RMSNorm, ...: both models are then read module "
        "by module)"
    )
    if "position table" in body:  # no kind of xgrad's holds it: no reading as layers
        return f"{fix}, a position table an nnx.Embed called on jnp.arange(T)"
    return (
        f"{fix}, or write its attention with q/k/v kernels (dim, heads, head_dim) and an "
        "output kernel (heads, head_dim, dim) so that it reads as layers, and compare it "
        "against a model that reads as layers too (an NNX port, or xgrad.MLP(...) with "
        "params, a spec of xgrad's kinds)"
    )


_TOKEN_WISE = ("dense", "layernorm", "rmsnorm", "activation", "dropout", "residual")
"""The kinds that read examples ``(tokens, d)`` vector by vector since issue 21 and were read
module by module on them before (a user's ``nn.Linear``/``nn.LayerNorm``/``nn.GELU`` model)."""


def _token_wise_only(reference, candidate, models) -> bool:
    """Whether two users' models (neither one read already) take examples of rank 2 or more
    through layers of :data:`_TOKEN_WISE` kinds only. Read as layers, their activations fold
    into the ``Dense`` before them and their names give way to ``layers.0.layers.1``; module
    by module, each keeps its own name and the code between two modules is placed there, as
    before those kinds took tokens. A model with a transformer kind (an ``Embedding``, an
    ``Attention``) or a ``Flatten`` stays read as layers."""
    if any(isinstance(obj, AbstractModel) for obj in (reference, candidate)):
        return False
    return all(
        len(m.input_shape) > 1 and all(info.kind in _TOKEN_WISE for info in m.walk())
        for m in models
    )


def _read_both(reference, candidate, batch) -> tuple[AbstractModel, AbstractModel]:
    x = None if batch is None else batch.args[0]
    shape = input_shape_of(x) if x is not None else None
    ref_model = read_model(reference, input_shape=shape)
    cand_model = read_model(candidate, input_shape=shape or ref_model.input_shape)
    return ref_model, cand_model


def _pair_layers(ref_model, cand_model, mapping) -> ModelPair:
    alignment = align(ref_model, cand_model, mapping)
    notes = [
        f"{side} {info.path} ({info.name}): {info.note}"
        for side, model in (("reference", ref_model), ("candidate", cand_model))
        for info in model.walk()
        if info.note
    ]
    if alignment.note:
        notes.append(alignment.note)
    notes += pairing_notes(alignment)
    return ModelPair(ref_model, cand_model, alignment, notes)


def _call_kwargs(value) -> dict:
    """``apply_kwargs`` for each side: ``None``, one dict for both, or per side."""
    if value is None:
        return {"reference": None, "candidate": None}
    if not isinstance(value, Mapping):
        raise InputError(f"apply_kwargs must be a dict of keyword arguments, got {value!r}")
    if value and set(value) <= {"reference", "candidate"}:
        return _sides(value, "apply_kwargs")
    return {"reference": value, "candidate": value}


def _read_modules(reference, candidate, batch, mapping, options, why) -> ModelPair:
    from xgrad.pairing import pair_modules

    if batch is None:
        raise InputError("reading a model module by module needs its inputs: pass x")
    outputs, modes, calls = options
    models = {}
    for side, obj in (("reference", reference), ("candidate", candidate)):
        if isinstance(obj, AbstractModel) and not isinstance(obj, CapturedModel):
            raise ModulesUnsupported(
                f"xgrad's own {obj.framework} model is read as the layers of its spec, not "
                "module by module",
                side,
            )
        try:
            models[side] = capture_model(
                obj, batch, output=outputs[side], training=modes[side], apply_kwargs=calls[side]
            )
        except FrameworkError as exc:
            if "module by module" in str(exc):
                raise ModulesUnsupported(str(exc), side) from None
            raise
    pairing = pair_modules(models["reference"], models["candidate"], mapping)
    pairing, apart = _state_apart(pairing, models)
    notes = [f"read module by module ({why})"] if why else ["read module by module"]
    notes += [apart] if apart else []
    integer = [name for name in batch.names if name not in batch.floating]
    if integer:
        one = len(integer) == 1
        notes.append(
            f"{', '.join(integer)} {'holds' if one else 'hold'} integers (token ids or "
            f"indices): {'it has' if one else 'they have'} no dL/dinput, so no input entry "
            "compares one"
        )
    for side, model in models.items():
        if getattr(model, "output_note", None):
            notes.append(f"{side}: {model.output_note}")
        notes += [
            f"{side} {info.name or '(the model)'}: {info.note}"
            for info in model.walk()
            if info.note
        ]
    notes += pairing_notes(pairing)
    pair = ModelPair(models["reference"], models["candidate"], pairing, notes, tier="modules")
    pair.batch = batch
    return pair


def _state_apart(pairing, models: dict):
    """``(pairing, note or None)``: state arrays (running statistics read as state) that
    pair with nothing are never unpaired *parameters* (their gradient is not a question);
    they leave ``pairing.unpaired`` and the note names them, on either side, as not
    compared (an opaque module's state, a channels-first ``nn.BatchNorm2d``'s running
    statistics, is never paired and would otherwise go unsaid)."""
    state = {
        side: [
            f"{info.path}.{local}" if info.path else local
            for info in model.modules
            for local in info.state
        ]
        for side, model in models.items()
    }
    paired = {"reference": set(pairing.names), "candidate": set(pairing.names.values())}
    apart = [(side, n) for side, names in state.items() for n in names if n not in paired[side]]
    if not apart:
        return pairing, None
    gone = set(apart)
    kept = tuple(u for u in pairing.unpaired if (u[0], u[1]) not in gone)
    listed = ", ".join(f"{side} {name}" for side, name in apart[:6])
    more = f" and {len(apart) - 6} more" if len(apart) > 6 else ""
    note = (
        f"{len(apart)} state array(s) (buffers such as running statistics, not parameters) "
        "pair with nothing "
        f"on the other side: {listed}{more}; they were not compared, so neither their values "
        "nor how an evaluation in training mode updates them (a BatchNorm's momentum) is "
        "checked here"
    )
    return dataclasses.replace(pairing, unpaired=kept), note


def pairing_notes(pairing) -> list[str]:
    """What a report says of a module-by-module pairing: parameters left unpaired, axis
    orders assumed, tied weights."""
    notes = []
    if pairing.unpaired:
        listed = "; ".join(f"{side} {name} ({why})" for side, name, why in pairing.unpaired[:6])
        more = f" and {len(pairing.unpaired) - 6} more" if len(pairing.unpaired) > 6 else ""
        notes.append(
            f"{len(pairing.unpaired)} parameter(s) pair with nothing on the other side, so "
            f"their gradients are not compared: {listed}{more}; pass ignore= to accept that, "
            "or mapping={reference: candidate} to pair them"
        )
    for t in getattr(pairing, "tied", ()):
        separate = "candidate" if t.side == "reference" else "reference"
        notes.append(
            f"the {t.side} ties {t.alias} to {t.owner} (one array used twice) where the "
            f"{separate} has a separate parameter {t.other}: compared as tied-weights; the "
            f"{separate}'s copy was given the same values"
            if t.side == "reference"
            else f"the {t.side} ties {t.alias} to {t.owner} (one array used twice) where the "
            f"{separate} has a separate parameter {t.other}: compared as tied-weights"
        )
    how = getattr(pairing, "how", {})
    weak = [
        f"{r.path} <-> {c.path}"
        for r, c in pairing.pairs
        if how.get(r.path) == "output shape and call order"
        and not r.info.kind == c.info.kind != "module"
    ]
    if weak:
        more = f" and {len(weak) - 6} more" if len(weak) > 6 else ""
        notes.append(
            f"{len(weak)} module pair(s) without weights, of other names and no common known "
            f"kind, were paired by call order and output shape alone: {', '.join(weak[:6])}"
            f"{more}; if one is wrong, pass mapping={{reference module: candidate module}}"
        )
    if getattr(pairing, "assumed", ()):
        notes.append(
            "the axis order of square parameters of modules of no known kind cannot be told "
            f"from their shapes and was taken as it stands: {', '.join(pairing.assumed)}; if "
            "they differ there, check that layout (or load the weights yourself and pass "
            "transfer=False)"
        )
    notes += list(getattr(pairing, "notes", ()))  # pairs through a permutation, sum, blocks
    return notes


def transfer(pair: ModelPair, how: bool | str = "auto") -> ModelPair:
    """Copy the reference's weights into (a copy of) the candidate: always (``True``), never
    (``False``), or when the candidate's weights are an unrelated initialisation
    (``"auto"``, with a note saying which it did). The user's objects are never changed.

    Raises:
        InputError: ``how`` is none of ``True``, ``False``, ``"auto"``.
    """
    if how not in (True, False, "auto"):
        raise InputError(f"transfer must be True, False or 'auto', got {how!r}")
    if how == "auto":
        found = loaded_from(pair.reference, pair.candidate, pair.alignment)
        how = not found
        pair.notes.append(
            f"transfer='auto': the candidate holds the reference's weights ({found}), so its "
            "own weights were compared"
            if found
            else "transfer='auto': the candidate's weights are an unrelated initialisation, so "
            "the reference's were copied into a copy of it"
        )
    if how:
        weights = pair.alignment.to_candidate(pair.reference.weights())
        pair.candidate = pair.candidate.with_weights(weights)
    pair.transferred = bool(how)
    return pair
