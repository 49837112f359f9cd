"""Code in README.md and docs/*.md runs, and prints what the page says it prints.

Per file, every ```python block runs in order in one namespace; when a ```text block
follows it directly, the block's printed output must equal that text (``...`` in it matches
any text, as doctest's ELLIPSIS does). Docstring examples
in the framework-free modules run as doctests.

A page never pins a rounding-level figure: a measured error such as ``rel_norm 2.37e-07``
depends on the CPU's kernels (an AMD EPYC printed 2.12e-07 where an Intel Xeon printed
2.37e-07) and is written ``...`` instead. ``make test`` runs these pages a second time under
another numeric configuration (Makefile ``test-numerics``) so that such a figure fails here.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import FRAMEWORKS, INSTALLED

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)

ROUNDING_LEVEL = 1e-4
"""Below this, a figure with two or more significant digits is a measured rounding error
(float32's unit roundoff is 6e-8; float16's 4.9e-4 is not reached by measured errors that
pages print): it differs between CPUs, so a page elides it with ``...``."""

_FIGURE = re.compile(r"(?<![\w.])\d+\.\d+(?:e-\d+)?(?![\w.])")
_CONSTANTS = {
    float(np.finfo(t).eps) for t in (np.float16, np.float32, np.float64)
}  # machine epsilons are configuration (RMSNorm's eps=None), not measurements


def rounding_level_figures(line: str) -> list[str]:
    """The figures in ``line`` that look like measured rounding errors: two or more
    significant digits, magnitude below :data:`ROUNDING_LEVEL`, not a machine epsilon.

    >>> rounding_level_figures("worst input in torch: rel_norm 2.37e-07 (tolerance 1e-05)")
    ['2.37e-07']
    >>> rounding_level_figures("RMSNorm(epsilon=1.1920928955078125e-07) eps 0.001 rel 8.48e-03")
    []
    """
    found = []
    for m in _FIGURE.finditer(line):
        value = float(m.group())
        digits = m.group().split("e")[0].replace(".", "").lstrip("0")
        if 0 < value < ROUNDING_LEVEL and len(digits) >= 2:
            if not any(abs(value - c) <= 1e-3 * c for c in _CONSTANTS):
                found.append(m.group())
    return found


def _blocks(text: str):
    """(code, expected output or None) for each python block."""
    found = [(m.group(1), m.group(2), m.start(), m.end()) for m in FENCE.finditer(text)]
    out = []
    for i, (lang, body, _, end) in enumerate(found):
        if lang != "python":
            continue
        expected = None
        if i + 1 < len(found):
            nlang, nbody, nstart, _ = found[i + 1]
            if nlang == "text" and text[end:nstart].strip() == "":
                expected = nbody
        out.append((body, expected))
    return out


@pytest.mark.skipif(set(FRAMEWORKS) - INSTALLED, reason="the pages use every framework")
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_examples_run_and_print_what_they_say(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for n, (code, expected) in enumerate(_blocks(page.read_text())):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(compile(code, f"{page.name} block {n + 1}", "exec"), namespace)
        if expected is not None:
            pinned = [
                (line.strip(), figures)
                for line in expected.splitlines()
                if (figures := rounding_level_figures(line))
            ]
            assert not pinned, (
                f"{page.name} block {n + 1} pins rounding-level figure(s) {pinned[0][1]} in "
                f"{pinned[0][0]!r}: they differ between CPUs; write ... instead"
            )
            got = [line.rstrip() for line in buffer.getvalue().strip().splitlines()]
            want = [line.rstrip() for line in expected.strip().splitlines()]
            assert len(got) == len(want) and all(map(_same, got, want)), (
                f"{page.name} block {n + 1} printed something else:\n"
                + "\n".join(got)
                + "\n--- expected ---\n"
                + "\n".join(want)
            )


def _same(got: str, want: str) -> bool:
    """Lines are equal; ``...`` in the expected line stands for any text (as doctest's
    ELLIPSIS: for figures at rounding level, which differ from run to run)."""
    if "..." not in want:
        return got == want
    pattern = ".*".join(re.escape(part) for part in want.split("..."))
    return re.fullmatch(pattern, got) is not None


DOCTEST_MODULES = [
    "xgrad.spec",
    "xgrad.activations",
    "xgrad.losses",
    "xgrad.params",
    "xgrad.layers.dense",
    "xgrad.layers.dropout",
    "xgrad.layers.activation",
    "xgrad.layers.layernorm",
    "xgrad.layers.batchnorm",
    "xgrad.layers.residual",
    "xgrad.layers.text",
    "xgrad.identify",
    "xgrad.frameworks.registry",
    "xgrad.runner",
    "xgrad.testing",
]


def test_the_guard_finds_a_pinned_figure_and_passes_configuration():
    assert rounding_level_figures("OK: worst loss: rel_norm 2.49e-07 (tolerance 1e-05)") == [
        "2.49e-07"
    ]
    assert rounding_level_figures("error drops from 0.00017 to 8.4e-08") == ["8.4e-08"]
    assert rounding_level_figures("momentum 0.99 eps 1e-05 epsilon 1.19209e-07") == []
    assert rounding_level_figures("MISMATCH ... rel_norm 8.48e-03 (tolerance 1e-05)") == []


@pytest.mark.parametrize("module", DOCTEST_MODULES)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
