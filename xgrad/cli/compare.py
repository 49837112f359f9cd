"""``xgrad compare``: one model's gradients across frameworks (:func:`xgrad.compare`)."""

from __future__ import annotations

import argparse

import numpy as np

from xgrad.cli import inputs
from xgrad.cli.output import check_outputs, console, show, status
from xgrad.cli.parser import common, outputs
from xgrad.errors import InputError

NAME = "compare"


def add_arguments(subparsers) -> argparse.ArgumentParser:
    """Add ``compare`` and its flags to ``subparsers``; returns its parser."""
    from xgrad.losses import LOSSES

    p = subparsers.add_parser(
        NAME,
        help="compare one model's gradients across frameworks",
        description="Compare one model's gradients across frameworks against "
        "a float64 NumPy reference. Exit 0: all match; 1: mismatch; 2: error.",
    )
    p.add_argument("--input-dim", help="input features (10) or example shape (28x28)")
    p.add_argument(
        "--layers",
        required=True,
        metavar="SPEC",
        help="e.g. 8:relu,5:sigmoid or 64:gelu,layernorm,residual(64:relu),dropout(0.1),10",
    )
    p.add_argument("--no-bias", action="store_true", help="Dense layers without bias")
    p.add_argument("--batch", type=int, default=None, help="rows of random input (default 2)")
    p.add_argument("--loss", choices=list(LOSSES), default=None, help="default: sum")
    p.add_argument("--input", metavar="FILE", help=".npy with x, or .npz with x (and y)")
    p.add_argument("--targets", metavar="FILE", help=".npy with y (default: random, seeded)")
    p.add_argument("--params", metavar="FILE", help="canonical params (.npz / .safetensors)")
    p.add_argument(
        "--cotangent", metavar="FILE", help=".npy grad_output to back-propagate instead of a loss"
    )
    p.add_argument("--title", default=None, help="a heading for the report")
    p.add_argument(
        "--explain",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compare every layer and test the known causes of a mismatch (default: only "
        "when one is found)",
    )
    outputs(p, plot=True, repro=True)
    common(p)
    return p


def _input_file(args) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(x, y)`` from ``--input`` (``y`` only from an ``.npz`` holding it), or ``None``s."""
    if not args.input:
        return None, None
    if args.batch is not None:
        raise InputError(
            "conflicting flags: --batch and --input (the batch is the number "
            "of rows in the input file); drop --batch"
        )
    x = inputs.load_array(args.input, "--input", key="x")
    if x is None:
        raise InputError(f"--input {args.input!r}: the .npz file has no array named 'x'")
    y = None
    if args.input.lower().endswith(".npz"):
        y = inputs.load_array(args.input, "--input", key="y")
    return x, y


def _input_dim(args, x: np.ndarray | None) -> int | tuple[int, ...]:
    """``--input-dim``, or the shape of one example of the input file."""
    input_dim = inputs.shape(args.input_dim) if args.input_dim is not None else None
    if input_dim is None:
        if x is None or x.ndim < 2:
            raise InputError("--input-dim is required unless --input gives a batch of inputs")
        input_dim = x.shape[1] if x.ndim == 2 else tuple(x.shape[1:])
    one = input_dim if isinstance(input_dim, tuple) else (input_dim,)
    if x is not None and tuple(x.shape[1:]) != one:
        raise InputError(
            f"conflicting flags: --input-dim {args.input_dim} but the input file has examples "
            f"of shape {tuple(x.shape[1:])}"
        )
    return input_dim


def run(args: argparse.Namespace) -> int:
    """Compare the model of ``--layers`` on the given or a seeded random batch."""
    from xgrad.layers.text import parse_layers
    from xgrad.losses import get_loss, random_targets
    from xgrad.params import load_params
    from xgrad.runner import compare
    from xgrad.spec import MLP

    check_outputs(args)
    x, y = _input_file(args)
    input_dim = _input_dim(args, x)
    spec = MLP(input_dim, parse_layers(args.layers, use_bias=not args.no_bias))
    batch = args.batch if args.batch is not None else 2
    if x is None:
        if batch <= 0:
            raise InputError(f"--batch must be a positive integer, got {batch}")
        x = np.random.default_rng(args.seed).standard_normal((batch, *spec.input_shape))
    cotangent = None
    if args.cotangent:
        if args.loss is not None:
            raise InputError(
                "conflicting flags: --cotangent and --loss (a cotangent replaces "
                "the loss); drop one"
            )
        cotangent = inputs.load_array(args.cotangent, "--cotangent")
    loss = args.loss or "sum"
    if args.targets:
        if not get_loss(loss).needs_target:
            raise InputError(
                f"conflicting flags: --targets with --loss {loss}, which takes no targets"
            )
        y = inputs.load_array(args.targets, "--targets")
    if y is None and cotangent is None:
        y = random_targets(loss, x.shape[0], spec.output_dim, args.seed)
    report = compare(
        spec,
        x,
        y,
        loss=loss,
        frameworks=args.frameworks,
        dtype=args.dtype,
        params=load_params(args.params) if args.params else None,
        seed=args.seed,
        cotangent=cotangent,
        rtol=args.rtol,
        title=args.title,
        explain=args.explain,
    )
    show(report, args, console())
    return status(report.ok)
