"""Frameworks are imported lazily: `import xgrad` imports none of them."""

import subprocess
import sys

import pytest

HEAVY = ("tensorflow", "keras", "jax", "flax", "torch")


def _imported_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return [m for m in out.stdout.strip().split(",") if m]


def test_import_xgrad_imports_no_framework():
    assert _imported_after("import xgrad") == []


def test_numpy_imports_no_framework():
    code = (
        "import xgrad, numpy as np\n"
        "spec = xgrad.MLP(3, [xgrad.Dense(2, 'relu')])\n"
        "xgrad.get_framework('numpy').build(spec).gradients(np.ones((1, 3)))"
    )
    assert _imported_after(code) == []


@pytest.mark.skipif("jax" not in __import__("conftest").INSTALLED, reason="jax not installed")
def test_jax_and_flax_import_neither_tensorflow_nor_torch():
    code = (
        "import xgrad, numpy as np\n"
        "spec = xgrad.MLP(3, [xgrad.Dense(2, 'relu')])\n"
        "xgrad.compare(spec, np.ones((1, 3)), frameworks='numpy,jax,flax')"
    )
    imported = _imported_after(code)
    assert "jax" in imported and "flax" in imported
    assert not {"tensorflow", "keras", "torch"} & set(imported)


def test_naming_a_framework_imports_nothing_until_it_is_used():
    assert _imported_after("import xgrad\nxgrad.get_framework('tensorflow')") == []
