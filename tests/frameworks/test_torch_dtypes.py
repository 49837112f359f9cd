"""torch tensors NumPy cannot hold (bfloat16, the float8 kinds) are converted, never raised.

Users cast inside ``forward`` (``h.bfloat16().float()`` to mimic a 16-bit layer, a float8
fake-quantisation), or hold a whole model in bfloat16. Each comparison must come back with a
verdict, and the numbers it reports must be the model's own: the expected output difference
comes from calling the user's modules directly, not from xgrad.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED, rel_norm

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import xgrad  # noqa: E402

X = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
Y = np.random.default_rng(1).standard_normal((8, 3)).astype(np.float32)
FLOAT8 = [torch.float8_e4m3fn, torch.float8_e5m2]


class Net(nn.Module):
    """Two Linear layers; ``cast``: the hidden values pass through that dtype and back."""

    def __init__(self, cast: torch.dtype | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.fc2 = nn.Linear(16, 3)
        self.cast = cast

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        if self.cast is not None:
            h = h.to(self.cast).float()
        return self.fc2(h)


class Quantize(nn.Module):
    def forward(self, x):
        return x.to(torch.float8_e4m3fn)


class Dequantize(nn.Module):
    def forward(self, x):
        return x.float()


class Attending(nn.Module):
    """Read module by module (attention is no layer kind): a float8 module output inside."""

    def __init__(self, quantize: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.quant = Quantize() if quantize else nn.Identity()
        self.dequant = Dequantize()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        h = self.dequant(self.quant(torch.relu(self.fc1(x))))
        return self.fc2(self.attn(h, h, h, need_weights=False)[0])


def _pair(cast):
    torch.manual_seed(0)
    reference = Net()
    port = Net(cast)
    port.load_state_dict(reference.state_dict())
    return reference, port


def _output_rel(reference, port, x) -> float:
    """The output difference of the two modules as the user sees it, by calling them."""
    with torch.no_grad():
        xt = torch.from_numpy(x)
        return rel_norm(port(xt).double().numpy(), reference(xt).double().numpy())


@pytest.mark.parametrize("cast", [torch.bfloat16, *FLOAT8], ids=str)
def test_a_cast_inside_forward_gets_a_verdict_with_the_models_own_numbers(cast):
    reference, port = _pair(cast)
    report = xgrad.compare_models(reference, port, X, Y, loss="mse")
    assert not report.ok
    (output,) = [e for e in report.entries if e.kind == "output"]
    expected = _output_rel(reference, port, X)
    assert expected > 1e-4  # the cast rounds: the ports differ
    assert output.results["torch"].rel_norm == pytest.approx(expected, rel=1e-3)


def test_a_float8_module_output_is_tapped_when_read_module_by_module():
    torch.manual_seed(0)
    reference, port = Attending(False), Attending(True)
    port.load_state_dict(reference.state_dict())
    x = np.random.default_rng(2).standard_normal((4, 3, 6)).astype(np.float32)
    report = xgrad.compare_models(reference, port, x)
    assert not report.ok
    (output,) = [e for e in report.entries if e.kind == "output"]
    assert output.results["torch"].rel_norm == pytest.approx(
        _output_rel(reference, port, x), rel=1e-3
    )


def test_a_bfloat16_reference_against_a_float32_port():
    """The reference's weights (bfloat16) are written into the float32 port; the port then
    computes more precisely than the reference, which the bfloat16 tolerance accepts."""
    torch.manual_seed(0)
    reference = Net().to(torch.bfloat16)
    report = xgrad.compare_models(reference, Net(), X)
    assert report.dtype == "bfloat16" and report.ok, report.mismatch_message()


def test_a_bfloat16_model_against_a_float32_one_is_not_ok():
    reference, port = _pair(None)
    report = xgrad.compare_models(reference, port.to(torch.bfloat16), X)
    assert report.dtype == "float32" and not report.ok


def test_a_bfloat16_model_trains_beside_a_float32_one():
    reference, port = _pair(None)

    def sgd(params):
        return torch.optim.SGD(params, lr=0.1)

    report = xgrad.compare_training(
        reference, port.to(torch.bfloat16), X, Y, loss="mse", optimizers=(sgd, sgd), steps=2
    )
    assert not report.ok


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, *FLOAT8], ids=str
)
def test_every_floating_dtype_leaves_and_enters_torch_with_its_values(dtype):
    from xgrad.frameworks.torch.model import numpy_tensor, tensor_numpy

    values = [0.0, -1.5, 0.25, 3.0, -448.0 if dtype != torch.float8_e5m2 else -512.0]
    t = torch.tensor(values, dtype=torch.float64).to(dtype).requires_grad_(dtype.itemsize > 1)
    arr = tensor_numpy(t)
    assert np.asarray(arr, np.float64).tolist() == values
    back = numpy_tensor(arr).to(dtype)
    assert back.double().tolist() == values


def test_a_bfloat16_torch_reference_against_a_float32_keras_port():
    """The reference's bfloat16 weights (ml_dtypes' in NumPy) are loaded into a Keras port."""
    if "tensorflow" not in INSTALLED:
        pytest.skip("tensorflow is not installed")
    from xgrad.frameworks.tensorflow.ops import keras

    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).to(torch.bfloat16)
    port = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)]
    )
    report = xgrad.compare_models(reference, port, X)
    assert report.dtype == "bfloat16" and report.ok, report.mismatch_message()


def test_a_read_only_array_enters_torch_as_a_copy_without_a_warning():
    from xgrad.frameworks.torch.model import numpy_tensor

    arr = np.arange(6.0).reshape(2, 3)
    arr.flags.writeable = False  # torch warns on sharing it (an error under this suite)
    t = numpy_tensor(arr)
    t += 1
    assert arr.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
