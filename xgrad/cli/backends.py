"""``xgrad backends``: one ``.keras`` file under each Keras backend
(:func:`xgrad.compare_backends`)."""

from __future__ import annotations

import argparse
import os
import sys

from xgrad.cli.inputs import check_keras_path
from xgrad.cli.output import check_outputs, console, show, status
from xgrad.cli.parser import keras_file, outputs
from xgrad.errors import InputError

NAME = "backends"


def add_arguments(subparsers) -> argparse.ArgumentParser:
    """Add ``backends`` and its flags to ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        NAME,
        help="one .keras file under Keras' TensorFlow, JAX and PyTorch backends",
        description="Load one .keras file (safe mode) under each Keras backend, each in its "
        "own process, compute the gradients of the same weights on the same seeded batch, and "
        "report them side by side against xgrad's float64 NumPy model of its layers. Exit 0: "
        "every backend matches; 1: one does not; 2: error.",
    )
    keras_file(p, seed_help="seed of the input and targets", loss_default="projection")
    p.add_argument(
        "--backends",
        default="tensorflow,jax,torch",
        help="comma-separated Keras backends (default tensorflow,jax,torch)",
    )
    p.add_argument("--rtol", type=float, default=None, help="override the normwise tolerance")
    p.add_argument("--title", default=None, help="a heading for the report")
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds the backends' processes may take together (default 600)",
    )
    outputs(p, repro=True)
    return p


def run(args: argparse.Namespace) -> int:
    """Compare the file's gradients under each backend named in ``--backends``."""
    from xgrad.backends import compare_backends

    check_outputs(args)
    if args.batch <= 0:
        raise InputError(f"--batch must be a positive integer, got {args.batch}")
    if args.timeout <= 0:
        raise InputError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    check_keras_path(args.model)
    if "keras" not in sys.modules:  # this process reads the file with Keras on TensorFlow
        os.environ["KERAS_BACKEND"] = "tensorflow"
    report = compare_backends(
        args.model,
        args.backends,
        batch=args.batch,
        seed=args.seed,
        loss=args.loss,
        rtol=args.rtol,
        title=args.title,
        timeout=args.timeout,
    )
    show(report, args, console())
    return status(report.ok)
