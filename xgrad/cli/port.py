"""``xgrad port``: write a ``.keras`` model's weights for another framework and check the port
(:func:`xgrad.port.port_model_file`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from xgrad.cli.inputs import check_keras_path
from xgrad.cli.output import check_outputs, console, show, status
from xgrad.cli.parser import keras_file, one_of, outputs
from xgrad.errors import InputError

NAME = "port"


def add_arguments(subparsers) -> argparse.ArgumentParser:
    """Add ``port`` and its flags to ``subparsers``; returns its parser."""
    from xgrad.frameworks.registry import known_frameworks

    p = subparsers.add_parser(
        NAME,
        help="convert a .keras model's weights and verify the port",
        description="Load a .keras model in Keras safe mode, write its weights in canonical "
        "names, rebuild the model in the target framework from the written file, and compare "
        "the two on a seeded random batch.",
    )
    keras_file(p, seed_help="seed of the random input", loss_default=None)
    p.add_argument("--to", required=True, help=one_of(known_frameworks()))
    p.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="weights file: .npz or .safetensors in canonical names; with --to torch, .pt or "
        ".safetensors hold the module's state_dict",
    )
    outputs(p, repro=True)
    return p


def _check_out(to: str, out: str) -> None:
    """Refuse an ``--out`` name that is no weights file for ``--to`` (before anything is
    written or imported): one framework's own file for another, or no weights file at all."""
    from xgrad.frameworks.registry import known_frameworks, lookup_framework
    from xgrad.params import FILE_SUFFIXES

    suffix = Path(out).suffix.lower()
    own = {}  # framework -> the suffixes of its own files that are not canonical ones
    for name in known_frameworks():
        files = [s for s in lookup_framework(name).native_files if s not in FILE_SUFFIXES]
        if files:
            own[name] = files
    canonical = " or ".join(FILE_SUFFIXES)
    for name, files in own.items():
        if suffix in files and name != to:
            raise InputError(
                f"--out {out!r}: {files[0]} files are for --to {name}; use {canonical}"
            )
    if suffix not in FILE_SUFFIXES and suffix not in own.get(to, ()):
        others = ", ".join(f"{files[0]} with --to {name}" for name, files in own.items())
        hint = f" (or {others})" if others else ""
        raise InputError(f"--out {out!r}: the name must end in {canonical}{hint}")


def run(args: argparse.Namespace) -> int:
    """Port the file, print the comparison and the file written; exit 0 when the round trip
    is bit-exact and every gradient matches."""
    from xgrad.frameworks.registry import known_frameworks
    from xgrad.losses import get_loss
    from xgrad.port import port_model_file

    check_outputs(args)
    targets = known_frameworks()
    if args.to not in targets:  # before anything is written or imported
        raise InputError(f"--to {args.to!r}: choose one of {', '.join(targets)}")
    _check_out(args.to, args.out)
    check_keras_path(args.model)
    if args.batch <= 0:
        raise InputError(f"--batch must be a positive integer, got {args.batch}")
    loss = args.loss or "projection"
    get_loss(loss)
    port = port_model_file(
        args.model, to=args.to, out=args.out, batch=args.batch, seed=args.seed, loss=loss
    )
    out = console()
    show(port.report, args, out)
    if args.quiet:  # what the port wrote that is not a copy is said even then
        for note in port.notes:
            out.print(f"note: {note}", highlight=False, markup=False)
    out.print(port.summary(), highlight=False)
    return status(port.ok)
