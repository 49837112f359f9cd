"""PyTorch state_dict files: written whole, read without running code from the file."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from xgrad.errors import ModelFileError  # noqa: E402
from xgrad.frameworks.torch.files import load_state_dict, save_state_dict  # noqa: E402


@pytest.mark.parametrize("name", ["w.pt", "w.pth", "w.safetensors"])
def test_a_state_dict_round_trips_bit_exactly(tmp_path, name):
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    save_state_dict(tmp_path / name, module.state_dict())
    loaded = load_state_dict(tmp_path / name)
    assert set(loaded) == set(module.state_dict())
    assert all(torch.equal(loaded[k], v) for k, v in module.state_dict().items())
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no partial file left


def test_files_holding_anything_but_tensors_are_refused(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")  # a pickled module
    with pytest.raises(ModelFileError, match="was refused: it holds objects other than tensors"):
        load_state_dict(tmp_path / "module.pt")
    torch.save({"a": [1, 2]}, tmp_path / "lists.pt")
    with pytest.raises(ModelFileError, match="is not a state_dict"):
        load_state_dict(tmp_path / "lists.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="cannot read"):
        load_state_dict(tmp_path / "junk.pt")
    with pytest.raises(ModelFileError, match="must end in .pt"):
        load_state_dict(tmp_path / "w.npz")
    with pytest.raises(ModelFileError, match="does not exist"):
        load_state_dict(tmp_path / "missing.pt")
    with pytest.raises(ModelFileError, match="are not tensors"):
        save_state_dict(tmp_path / "x.pt", {"a": 1})
    assert not (tmp_path / "x.pt").exists()


def test_an_unwritable_place_is_an_output_error(tmp_path):
    from xgrad.errors import OutputError

    with pytest.raises(OutputError, match="does not exist"):
        save_state_dict(tmp_path / "missing" / "w.pt", {"a": torch.ones(2)})
