"""``xgrad examples``: the seed article's three examples, one report each."""

from __future__ import annotations

import argparse

from xgrad.cli.output import check_outputs, console, show, status
from xgrad.cli.parser import common, outputs

NAME = "examples"


def add_arguments(subparsers) -> argparse.ArgumentParser:
    """Add ``examples`` and its flags to ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        NAME,
        help="the seed article's three examples",
        description="Run the seed article's three examples through every "
        "framework and print their reports.",
    )
    outputs(p)
    common(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Compare each of :data:`xgrad.examples.SEED_EXAMPLES`; one verdict for all three."""
    from xgrad.examples import SEED_EXAMPLES
    from xgrad.report import ReportSet
    from xgrad.runner import compare

    check_outputs(args)
    reports = [
        compare(
            example.spec,
            example.x,
            loss=example.loss,
            frameworks=args.frameworks,
            dtype=args.dtype,
            seed=args.seed,
            rtol=args.rtol,
            title=example.title,
        )
        for example in SEED_EXAMPLES
    ]
    result = ReportSet("xgrad.examples/1", reports)
    show(result, args, console())
    return status(result.ok)
