"""``xgrad.convert(model, into=target)``: every parameter of the target is written, or none.

* A target with a parameter no parameter of the source pairs with (a learnt output gain the
  source lacks) is refused with :class:`~xgrad.convert.IncompleteConversion` naming it, and
  the target keeps every value it had: never returned half-filled with its own values.
* xgrad's own built models (a ``TorchModel``) are accepted as targets, also on token ids
  (which read users' models module by module): a ``TorchModel`` comes back holding the
  weights, located by hand in its ``nn.Sequential`` state dict.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad
from xgrad import MLP, Dense, Embedding
from xgrad.convert import IncompleteConversion

pytestmark = pytest.mark.skipif("torch" not in INSTALLED, reason="torch is not installed")

X = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
IDS = np.random.default_rng(1).integers(0, 10, (2, 5))


def _state(module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def test_a_target_parameter_that_pairs_with_nothing_is_refused_and_nothing_is_written():
    import torch
    from torch import nn

    class Gained(nn.Module):
        """The source's two Linear layers, then a learnt per-output gain it does not have."""

        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 3)
            self.gain = nn.Parameter(torch.full((3,), 2.0))

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x))) * self.gain

    torch.manual_seed(0)
    source = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    target = Gained()
    before = _state(target)
    with pytest.raises(IncompleteConversion, match=r"1 parameter\(s\) of the target Gained") as e:
        xgrad.convert(source, into=target, x=X)
    assert list(e.value.unwritten) == ["gain"]
    assert "Nothing was written" in str(e.value) and "mapping=" in str(e.value)
    assert isinstance(e.value, xgrad.XgradError)
    after = _state(target)
    assert sorted(after) == sorted(before)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_the_same_target_without_the_gain_is_filled():
    """The refusal above is the gain's doing: the same pair of Linear layers converts."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    source = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    filled = xgrad.convert(source, into=nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)))
    got, want = _state(filled), _state(source)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("x", [X, IDS], ids=["floats", "token-ids"])
def test_xgrads_own_torch_model_is_a_target(x):
    from torch import nn

    ids = x.dtype.kind == "i"
    spec = MLP((5,), [Embedding(10, 4), Dense(3)]) if ids else MLP(4, [Dense(8, "relu"), Dense(3)])
    first = nn.Embedding(10, 4) if ids else nn.Linear(4, 8)
    source = nn.Sequential(first, nn.Linear(4, 3)) if ids else nn.Sequential(first, nn.ReLU())
    if not ids:
        source.append(nn.Linear(8, 3))
    rng = np.random.default_rng(2)
    other = {k: rng.standard_normal(s) for k, s in spec.weight_shapes().items()}
    target = xgrad.get_framework("torch").build(spec, other, dtype="float32")
    before = _state(target.native)
    filled = xgrad.convert(source, into=target, x=x)
    assert type(filled) is type(target) and filled is not target
    got, src = _state(filled.native), _state(source)
    # xgrad's nn.Sequential: an Embedding as itself, a Dense as nn.Sequential(Linear, act)
    where = (
        {"0.weight": "0.weight", "1.0.weight": "1.weight", "1.0.bias": "1.bias"}
        if ids
        else {k: k.replace("1.0.", "2.").replace("0.0.", "0.") for k in got}
    )
    assert sorted(got) == sorted(where)
    for name, src_name in where.items():
        np.testing.assert_array_equal(got[name], src[src_name], err_msg=name)
        np.testing.assert_array_equal(_state(target.native)[name], before[name], err_msg=name)


def test_compare_models_reads_xgrads_own_torch_model_as_layers_on_token_ids():
    """Token ids send users' models module by module, which xgrad's built models are not:
    they are read as layers, with a note saying why (it raised AttributeError 'modules')."""
    from torch import nn

    spec = MLP((5,), [Embedding(10, 4), Dense(3)])
    rng = np.random.default_rng(2)
    other = {k: rng.standard_normal(s) for k, s in spec.weight_shapes().items()}
    built = xgrad.get_framework("torch").build(spec, other, dtype="float32")
    user = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 3))
    report = xgrad.compare_models(user, built, IDS)
    assert report.ok, report.summary()
    assert "xgrad's own torch model is read as the layers of its spec" in report.notes[0]
