"""The parser every command shares: one-line errors, the closest flag for a misspelt one, and
the argument groups several commands take (``--frameworks``/``--dtype``/``--seed``/``--rtol``,
the output files, a ``.keras`` file on a seeded batch)."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence

__all__ = [
    "Parser",
    "UsageError",
    "common",
    "keras_file",
    "one_of",
    "outputs",
    "parse",
    "seed",
]


class UsageError(Exception):
    """Raised by the parser instead of printing usage and exiting."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that never abbreviates a flag and raises :class:`UsageError`
    (one line, exit status 2 in :func:`xgrad.cli.main`) instead of printing its usage."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # --layer is not --layers
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, exit 2, no usage dump
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _command_parser(parser: argparse.ArgumentParser, command: str | None):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def _known(parser: argparse.ArgumentParser, command: str | None, word: str) -> bool:
    flag = word.split("=")[0]
    sub = _command_parser(parser, command)
    return any(flag in a.option_strings for p in (parser, sub) for a in p._actions)


def _unrecognized(parser: argparse.ArgumentParser, command: str | None, extra: list[str]):
    """The one-line error for flags a command does not take, with the closest flag it does."""
    sub = _command_parser(parser, command)
    flags = [o for action in sub._actions for o in action.option_strings if o.startswith("--")]
    close = difflib.get_close_matches(extra[0].split("=")[0], flags, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return UsageError(f"unrecognized arguments: {' '.join(extra)}{hint} (see '{sub.prog} --help')")


def parse(parser: argparse.ArgumentParser, words: Sequence[str]) -> argparse.Namespace:
    """The command line's arguments; a flag the command does not take is refused first, with
    the closest one it does (argparse's own checks would only say what is missing).

    Raises:
        UsageError: an unknown flag, a missing or invalid argument.
    """
    words = list(words)
    command = next((w for w in words if not w.startswith("-")), None)
    unknown = [w for w in words if w.startswith("--") and not _known(parser, command, w)]
    if unknown:
        raise _unrecognized(parser, command, unknown)
    args, extra = parser.parse_known_args(words)
    if extra:
        raise _unrecognized(parser, args.command, extra)
    return args


def one_of(names: Sequence[str]) -> str:
    """``"a, b or c"``."""
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


# -- argument groups ----------------------------------------------------------------------


def seed(text: str) -> int:
    """The argument type of ``--seed``: a non-negative integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
    return value


def common(p: argparse.ArgumentParser) -> None:
    """``--frameworks``, ``--dtype``, ``--seed`` and ``--rtol`` of a comparison."""
    from xgrad.frameworks.base import ALL_DTYPES
    from xgrad.frameworks.registry import known_frameworks

    p.add_argument(
        "--frameworks",
        default=None,
        metavar="LIST",
        help=f"comma-separated: {','.join(known_frameworks())} (default: all installed)",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=ALL_DTYPES,
        help="the dtype every framework computes in (default float32; 16-bit: jax, flax, "
        "tensorflow, torch)",
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of params, inputs and targets")
    p.add_argument(
        "--rtol",
        type=float,
        default=None,
        help="normwise tolerance (default: float32 1e-5, float64 1e-10)",
    )


def outputs(p: argparse.ArgumentParser, *, plot: bool = False, repro: bool = False) -> None:
    """``--json``, ``--markdown`` (and ``--plot``, ``--repro``) files, and ``--quiet``."""
    p.add_argument("--json", metavar="PATH", help="write the report as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the report as Markdown")
    if plot:
        p.add_argument("--plot", metavar="PATH", help="write a PNG of the errors")
    if repro:
        p.add_argument(
            "--repro",
            metavar="DIR",
            help="write a standalone script and .npz reproducing where each side first parts "
            "(the unit rebuilt in both frameworks, without xgrad)",
        )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="print only the diagnoses and verdict (and the notes the verdict refers to)",
    )


def keras_file(p: argparse.ArgumentParser, *, seed_help: str, loss_default: str | None) -> None:
    """The arguments of a command comparing a .keras file on a seeded random batch."""
    from xgrad.losses import LOSSES

    p.add_argument("model", metavar="MODEL.keras", help="a Keras 3 model file")
    p.add_argument("--batch", type=int, default=8, help="rows of random input (default 8)")
    p.add_argument("--seed", type=seed, default=0, help=seed_help)
    p.add_argument(
        "--loss",
        choices=list(LOSSES),
        default=loss_default,
        help="default: projection, sum(output * r) for a seeded random r (never degenerate)",
    )
