"""xgrad.align on plain LayerInfo tuples: units, pairing, names and layouts (no framework)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from xgrad import AlignmentError, Dense, LayerNorm
from xgrad.align import Alignment, align, identity_alignment, units
from xgrad.frameworks.base import AbstractModel, LayerInfo
from xgrad.layers import Activation


class Plain(AbstractModel):
    """Only what alignment reads: layers and (for parameter mappings) weights."""

    framework = "plain"
    dtype = "float64"

    def __init__(self, layers, weights=None, description="plain model"):
        self.layers = tuple(layers)
        self._weights = weights or {}
        self.description = description
        self.input_shape = layers[0].input_shape if layers else (1,)
        self.output_shape = layers[-1].output_shape if layers else (1,)

    native = None

    def weights(self):
        return dict(self._weights)

    def with_weights(self, weights):  # pragma: no cover - not used by alignment
        raise NotImplementedError

    def _evaluate(self, *args):  # pragma: no cover - not used by alignment
        raise NotImplementedError


def dense(path, n_in, n_out, name=None, bias=True, **kw):
    params = {"kernel": f"{name or path}/kernel"}
    if bias:
        params["bias"] = f"{name or path}/bias"
    return LayerInfo(
        path=path,
        kind="dense",
        name=name or path,
        layer=Dense(n_out, use_bias=bias),
        params=params,
        input_shape=(n_in,),
        output_shape=(n_out,),
        **kw,
    )


def act(path, d, name="act"):
    return LayerInfo(
        path, "activation", name, Activation("relu"), input_shape=(d,), output_shape=(d,)
    )


def norm(path, d, name="norm"):
    return LayerInfo(path, "layernorm", name, LayerNorm(), input_shape=(d,), output_shape=(d,))


def residual(path, children):
    return LayerInfo(
        path,
        "residual",
        "add",
        None,
        input_shape=children[0].input_shape,
        output_shape=children[-1].output_shape,
        children=tuple(children),
    )


def test_a_weight_free_layer_folds_into_the_unit_before_it_and_a_bare_norm_is_a_unit():
    layers = (act("layers.0", 4, "flatten_first"), dense("layers.1", 4, 3), act("layers.2", 3))
    layers += (norm("layers.3", 3),)
    tree = units(layers)
    assert [(u.path, u.end, u.start) for u in tree] == [
        ("layers.1", "layers.2", "layers.0"),
        ("layers.3", "layers.3", "layers.2"),
    ]
    assert [m.path for m in tree[0].members] == ["layers.2"]


def test_a_residual_block_is_a_unit_whose_children_come_first_in_walk_order():
    block = residual("layers.1", [dense("layers.1.layers.0", 3, 3), act("layers.1.layers.1", 3)])
    (first, second) = units((dense("layers.0", 2, 3), block))
    assert [u.path for u in second.walk()] == ["layers.1.layers.0", "layers.1"]
    assert second.children[0].start == "layers.0"


def test_auto_pairs_in_call_order_and_renames_weights():
    ref = Plain(
        (dense("layers.0", 4, 3, "fc1"), act("layers.1", 3), dense("layers.2", 3, 2, "fc2"))
    )
    cand = Plain((dense("layers.0", 4, 3, "dense"), dense("layers.1", 3, 2, "dense_1")))
    a = align(ref, cand)
    assert [(r.info.name, c.info.name) for r, c in a.pairs] == [
        ("fc1", "dense"),
        ("fc2", "dense_1"),
    ]
    assert a.names == {
        "layers.0.kernel": "layers.0.kernel",
        "layers.0.bias": "layers.0.bias",
        "layers.2.kernel": "layers.1.kernel",
        "layers.2.bias": "layers.1.bias",
    }


def test_different_depths_name_both_sides():
    ref = Plain((dense("layers.0", 4, 3, "fc1"), dense("layers.1", 3, 2, "fc2")))
    cand = Plain((dense("layers.0", 4, 2, "only"),))
    with pytest.raises(
        AlignmentError, match=r"reference has 2 layers with weights .*candidate has 1"
    ):
        align(ref, cand)


def test_swapped_widths_suggest_a_transposed_kernel():
    ref = Plain((dense("layers.0", 4, 3, "fc"),))
    cand = Plain((dense("layers.0", 3, 4, "fc"),))
    with pytest.raises(AlignmentError, match="the widths are swapped"):
        align(ref, cand)


def test_a_bias_on_one_side_only_is_refused_with_the_fix():
    ref = Plain((dense("layers.0", 4, 3, "fc"),))
    cand = Plain((dense("layers.0", 4, 3, "fc", bias=False),))
    with pytest.raises(AlignmentError, match=re.escape("give the candidate layer a bias")):
        align(ref, cand)


def test_a_layer_mapping_pairs_by_name_and_an_unknown_name_lists_the_layers():
    ref = Plain((dense("layers.0", 4, 4, "a"), dense("layers.1", 4, 4, "b")))
    cand = Plain((dense("layers.0", 4, 4, "x"), dense("layers.1", 4, 4, "y")))
    a = align(ref, cand, {"a": "y", "b": "x"})
    assert a.names["layers.0.kernel"] == "layers.1.kernel"
    with pytest.raises(AlignmentError, match="'nope', which does not exist; the candidate layers"):
        align(ref, cand, {"a": "nope", "b": "x"})


def test_a_parameter_mapping_finds_each_arrays_axis_order_from_its_shape():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3))
    conv = rng.standard_normal((2, 5, 3, 6))  # canonical (kh, kw, in, out)
    ref = Plain((dense("layers.0", 4, 3),), {"layers.0.kernel": w, "layers.0.bias": w[0]})
    ref._weights["layers.0.conv"] = conv
    ref.layers[0].params["conv"] = "c"
    torch_like = np.transpose(conv, (3, 2, 0, 1))  # (out, in, kh, kw)
    cand = Plain(
        (dense("layers.0", 4, 3, "fc"),),
        {"layers.0.kernel": w.T, "layers.0.bias": w[0], "layers.0.conv": torch_like},
    )
    cand.layers[0].params["conv"] = "weight"
    a = align(
        ref, cand, {"layers.0/kernel": "fc/kernel", "layers.0/bias": "fc/bias", "c": "weight"}
    )
    assert a.layouts == {"layers.0.kernel": (1, 0), "layers.0.conv": (3, 2, 0, 1)}
    assert a.transposed == {"layers.0.kernel"}
    back = a.to_reference(a.to_candidate(ref.weights()))
    assert all(np.array_equal(back[k], v) for k, v in ref.weights().items())
    assert np.array_equal(a.to_candidate(ref.weights())["layers.0.conv"], torch_like)


def test_a_parameter_mapping_with_several_fitting_axis_orders_is_refused():
    ref = Plain((dense("layers.0", 4, 3, bias=False),), {"layers.0.kernel": np.zeros((2, 3, 2))})
    cand = Plain(
        (dense("layers.0", 4, 3, "fc", bias=False),), {"layers.0.kernel": np.zeros((3, 2, 2))}
    )
    with pytest.raises(AlignmentError, match="axis orders give it"):
        align(ref, cand, {"layers.0/kernel": "fc/kernel"})


def test_identity_alignment_pairs_every_unit_with_itself():
    model = Plain((dense("layers.0", 4, 3), act("layers.1", 3)))
    a = identity_alignment(model)
    assert isinstance(a, Alignment) and [r.path for r, _ in a.pairs] == ["layers.0"]
    assert a.names == {"layers.0.kernel": "layers.0.kernel", "layers.0.bias": "layers.0.bias"}
