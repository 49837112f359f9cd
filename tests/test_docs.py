"""Code in README.md and docs/*.md runs, and prints what the page says it prints.

Per file, every ```python block runs in order in one namespace; when a ```text block
follows it directly, the block's printed output must equal that text (``...`` in it matches
any text, as doctest's ELLIPSIS does). Docstring examples
in the framework-free modules run as doctests.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import io
import re
from pathlib import Path

import pytest
from conftest import FRAMEWORKS, INSTALLED

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


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


@pytest.mark.parametrize("module", DOCTEST_MODULES)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
