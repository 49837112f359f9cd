"""``xgrad sweep``: compare over a grid of activations, losses, dtypes, batch sizes and seeds
(:func:`xgrad.sweep.run_sweep`)."""

from __future__ import annotations

import argparse
import math
import sys
import tomllib
from pathlib import Path

from xgrad.cli.inputs import csv, ints
from xgrad.cli.output import EXIT_INTERRUPTED, check_outputs, console, show, status
from xgrad.cli.parser import outputs
from xgrad.errors import InputError

NAME = "sweep"


def add_arguments(subparsers) -> argparse.ArgumentParser:
    """Add ``sweep`` and its flags to ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        NAME,
        help="compare over a grid of activations, losses, dtypes...",
        description="Compare over the product of activations x losses x dtypes x batch "
        "sizes x seeds (flags, or a TOML file whose keys are the flag names with "
        "underscores; flags win).",
    )
    p.add_argument("--config", metavar="TOML", help="grid file")
    p.add_argument(
        "--activations", metavar="LIST", help="hidden-layer activations (default: every activation)"
    )
    p.add_argument("--losses", metavar="LIST", help="default: sum,mse")
    p.add_argument("--dtypes", metavar="LIST", help="default: float32,float64")
    p.add_argument("--batch-sizes", metavar="LIST", help="default: 1,4")
    p.add_argument("--seeds", metavar="LIST", help="default: 0")
    p.add_argument("--input-dim", type=int, default=None, help="default 6")
    p.add_argument("--hidden", metavar="LIST", help="hidden widths (default 8,8)")
    p.add_argument("--output-dim", type=int, default=None, help="default 4")
    p.add_argument(
        "--layers",
        metavar="TEMPLATE",
        help="model template instead of --hidden: ACT and HEAD stand for each cell's "
        "activation and the loss's head, e.g. 8:ACT,layernorm,residual(8:ACT),4:HEAD",
    )
    p.add_argument("--frameworks", default=None, metavar="LIST", help="default: all installed")
    p.add_argument("--rtol", type=float, default=None, help="normwise tolerance override")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run the cells on N local worker processes (default 1: here, one by one)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the cells on the Dask cluster whose scheduler is at ADDRESS, e.g. "
        "tcp://10.0.0.5:8786 (pip install 'xgrad[dask]')",
    )
    p.add_argument(
        "--out",
        dest="out_dir",
        metavar="DIR",
        help="write each finished cell to DIR/cells/ and, at the end, DIR/sweep.json and "
        "DIR/sweep.md; a re-run with the same DIR skips the finished cells",
    )
    p.add_argument(
        "--cell-timeout",
        type=float,
        default=None,
        metavar="S",
        help="record a cell that runs longer than S seconds as timed out and go on",
    )
    outputs(p)
    return p


def _config(path: str | None) -> dict:
    """The settings of the ``--config`` TOML file (none without one)."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--config {path!r}: no such file")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"--config {path!r} is not valid TOML: {exc}") from None


def _flags(args: argparse.Namespace) -> dict:
    """The grid settings given as flags (``None``: not given, the file's or the default)."""

    def listed(text, read=csv):
        # a flag given empty ("$ACTS" unset) is an empty axis, refused: never the default
        return None if text is None else read(text)

    return {
        "activations": listed(args.activations),
        "losses": listed(args.losses),
        "dtypes": listed(args.dtypes),
        "batch_sizes": listed(args.batch_sizes, lambda t: ints(t, "--batch-sizes")),
        "seeds": listed(args.seeds, lambda t: ints(t, "--seeds")),
        "input_dim": args.input_dim,
        "hidden": listed(args.hidden, lambda t: ints(t, "--hidden")),
        "output_dim": args.output_dim,
        "layers": args.layers,
        "frameworks": listed(args.frameworks),
        "rtol": args.rtol,
    }


def _check_runner(args: argparse.Namespace) -> None:
    """Refuse ``--workers``, ``--scheduler`` and ``--cell-timeout`` values that cannot run."""
    if args.workers < 1:
        raise InputError(f"--workers must be a positive integer, got {args.workers}")
    if args.scheduler and args.workers != 1:
        raise InputError(
            "conflicting flags: --workers and --scheduler (the Dask cluster's workers run "
            "the cells); drop one"
        )
    if args.cell_timeout is not None and not (0 < args.cell_timeout < math.inf):
        raise InputError(
            f"--cell-timeout must be a positive number of seconds, got {args.cell_timeout}"
        )


def run(args: argparse.Namespace) -> int:
    """Run the grid of the flags (over the ``--config`` file's settings); 130 when stopped."""
    import contextlib

    from xgrad.sweep import SweepGrid, SweepInterrupted, dask_executor, run_sweep

    check_outputs(args)
    config = _config(args.config)
    flags = {k: v for k, v in _flags(args).items() if v is not None}
    grid = SweepGrid.from_mapping({**config, **flags})
    for note in grid.notes():  # runs, but cannot mean what it seems: say so before it runs
        print(f"note: {note}", file=sys.stderr)
    _check_runner(args)
    runner = dask_executor(args.scheduler) if args.scheduler else contextlib.nullcontext()
    try:
        with runner as executor:
            result = run_sweep(
                grid,
                executor=executor,
                workers=args.workers,
                out=args.out_dir,
                cell_timeout=args.cell_timeout,
                progress=not (args.no_progress or args.quiet),
            )
    except SweepInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    show(result, args, console())
    return status(result.ok)
