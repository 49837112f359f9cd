"""The ``xgrad`` command line: ``compare``, ``examples``, ``sweep``, ``port``, ``backends``,
``train-compare``.

Exit status: 0 when every gradient matches, 1 on any mismatch or non-finite gradient, 2 on
bad usage or input (one line ``error: ...`` on stderr, never a traceback). Only the
frameworks named with ``--frameworks`` are imported. Every command takes ``--quiet``,
``--json PATH`` and ``--markdown PATH``.

One module per command, each with ``add_arguments(subparsers)`` (its flags) and
``run(args) -> int`` (parse the flags' values, call the library, print); :mod:`.parser` holds
what the commands share (one-line errors, argument groups), :mod:`.inputs` the reading of
flag values and :mod:`.output` the printing and writing of a report.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from xgrad._version import __version__
from xgrad.cli import backends, compare, examples, port, sweep, train_compare
from xgrad.cli.output import EXIT_INTERRUPTED, EXIT_MISMATCH, EXIT_OK, EXIT_USAGE
from xgrad.cli.parser import Parser, UsageError, parse
from xgrad.errors import XgradError

__all__ = [
    "COMMANDS",
    "EXIT_INTERRUPTED",
    "EXIT_MISMATCH",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

COMMANDS = (compare, examples, sweep, port, backends, train_compare)
"""The commands' modules, in the order ``xgrad --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``xgrad``: one subcommand per module of :data:`COMMANDS`."""
    parser = Parser(
        prog="xgrad",
        description="Do these models compute the same gradients in NumPy, JAX, Flax, "
        "TensorFlow/Keras and PyTorch, and if not, where and why not?",
    )
    parser.add_argument("--version", action="version", version=f"xgrad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.add_arguments(sub).set_defaults(func=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 match, 1 mismatch, 2 usage or input error)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any framework is imported
    parser = build_parser()
    try:
        args = parse(parser, sys.argv[1:] if argv is None else argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        return args.func(args)
    except (UsageError, XgradError) as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
