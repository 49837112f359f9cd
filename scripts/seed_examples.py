"""The seed article's three examples through every installed framework, side by side.

For each example and parameter, one table: a row per element (the first few of each), a
column per framework headed by that framework's native name of the parameter, then the
largest difference to the float64 NumPy reference. Run with ``make demo`` or
``python scripts/seed_examples.py [--dtype float32] [--frameworks numpy,jax] [--rows 6]``.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from rich.console import Console
from rich.table import Table

import xgrad
from xgrad.examples import SEED_EXAMPLES


def _table(title, entries, rows):
    """entries: list of (framework, native name, array, reference array)."""
    table = Table(title=title, title_justify="left")
    table.add_column("element", justify="right", style="dim")
    for framework, native, _, _ in entries:
        table.add_column(f"{framework}\n{native}", justify="right")
    first = entries[0][2]
    for flat in range(min(rows, first.size)):
        idx = np.unravel_index(flat, first.shape)
        table.add_row(
            str(tuple(int(i) for i in idx)), *(f"{arr[idx]: .7g}" for _, _, arr, _ in entries)
        )
    if first.size > rows:
        table.add_row(f"... {first.size - rows} more", *("" for _ in entries))
    table.add_row(
        "max |diff| vs ref",
        *(f"{np.max(np.abs(arr.astype(np.float64) - ref)):.2e}" for _, _, arr, ref in entries),
        style="bold",
    )
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=xgrad.DTYPES)
    parser.add_argument("--frameworks", default=",".join(xgrad.available_frameworks()))
    parser.add_argument("--rows", type=int, default=6, help="elements shown per parameter")
    args = parser.parse_args(argv)
    console = Console(width=160)
    frameworks = [f for f in args.frameworks.split(",") if f]
    for example in SEED_EXAMPLES:
        params = xgrad.init_params(example.spec, seed=0)
        ref = xgrad.get_framework("numpy").build(example.spec, params, dtype="float64")
        ref_grads = ref.gradients(example.x, loss=example.loss)
        results = []
        for name in frameworks:
            model = xgrad.get_framework(name).build(example.spec, params, dtype=args.dtype)
            results.append(
                (name, model.native_names(), model.gradients(example.x, loss=example.loss))
            )
        console.rule(f"[bold]{example.title}")
        console.print(
            f"model {example.spec.describe()}, input shape {example.x.shape}, "
            f"loss = {example.loss} of outputs, dtype {args.dtype}; "
            f"reference: numpy float64, loss {ref_grads.loss:.9g}"
        )
        for pname in example.spec.param_shapes():
            entries = [
                (fw, names[pname], g.params[pname], ref_grads.params[pname])
                for fw, names, g in results
            ]
            console.print(
                _table(f"dL/d {pname}  shape {ref_grads.params[pname].shape}", entries, args.rows)
            )
        entries = [(fw, "input", g.input, ref_grads.input) for fw, _, g in results]
        console.print(_table(f"dL/d input  shape {example.x.shape}", entries, args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
