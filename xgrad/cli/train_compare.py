"""``xgrad train-compare``: train a model and its port side by side and find where their
weights part (:func:`xgrad.compare_training`)."""

from __future__ import annotations

import argparse

import numpy as np

from xgrad.cli import inputs
from xgrad.cli.output import check_outputs, console, show, status
from xgrad.cli.parser import outputs, seed
from xgrad.errors import InputError

NAME = "train-compare"


def add_arguments(subparsers) -> argparse.ArgumentParser:
    """Add ``train-compare`` and its flags to ``subparsers``; returns its parser."""
    from xgrad.losses import LOSSES

    p = subparsers.add_parser(
        NAME,
        help="train a model and its port side by side and find where the weights part",
        description="Run N optimizer steps of a .keras model (or a --layers model built in "
        "--from) and of its port in --to, each with its own framework's optimizer, beside a "
        "float64 NumPy referee; report the first step and weight where they part and the "
        "optimizer convention behind it. Exit 0: the weights agree; 1: they part; 2: error.",
    )
    p.add_argument("model", nargs="?", metavar="MODEL.keras", help="a Keras 3 model file")
    p.add_argument("--to", required=True, help="the port's framework: numpy, jax, flax, torch...")
    p.add_argument(
        "--from",
        dest="source",
        default=None,
        help="the reference's framework for --layers (default numpy)",
    )
    p.add_argument("--weights", metavar="FILE", help="canonical weights (.npz / .safetensors)")
    p.add_argument("--layers", metavar="SPEC", help="a built-in model instead of MODEL.keras")
    p.add_argument("--input-dim", help="input features (10) or example shape (28x28)")
    p.add_argument("--no-bias", action="store_true", help="Dense layers without bias")
    p.add_argument(
        "--optimizer",
        required=True,
        metavar="SPEC",
        help="the reference's optimizer, NAME[:KEY=VALUE,...], e.g. adam:lr=1e-3,eps=1e-7 "
        "(sgd, adam, adamw, rmsprop); options left out take its framework's defaults",
    )
    p.add_argument(
        "--port-optimizer",
        metavar="SPEC",
        default=None,
        help="the port's optimizer (default: the same SPEC, with the port framework's defaults)",
    )
    p.add_argument("--steps", type=int, default=10, help="optimizer steps (default 10)")
    p.add_argument("--batch", type=int, default=8, help="rows of random input (default 8)")
    p.add_argument("--loss", choices=list(LOSSES), default=None, help="default: mse")
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default=None,
        help="for --layers (default float32)",
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of weights, input and targets")
    p.add_argument("--rtol", type=float, default=None, help="base tolerance (grows as sqrt(step))")
    p.add_argument("--title", default=None, help="a heading for the report")
    p.add_argument(
        "--explain",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="diagnose the first divergence (default: when the weights part)",
    )
    outputs(p, plot=True)
    return p


def _from_file(args: argparse.Namespace, to: str):
    """The model of MODEL.keras and its port in ``to``: ``(reference, candidate, spec,
    reference framework, transfer)``; the port holds ``--weights`` when given (then both
    train from their own weights), else the file's (copied across)."""
    from xgrad.convert import spec_of
    from xgrad.frameworks.registry import get_framework, read_model
    from xgrad.params import load_params
    from xgrad.port import model_file_framework

    for flag, value in (("--layers", args.layers), ("--dtype", args.dtype)):
        if value is not None:
            raise InputError(
                f"conflicting flags: MODEL.keras and {flag} (the file gives the model and "
                "its dtype); drop one"
            )
    reader = model_file_framework(".keras")  # it checks the file itself when loading it
    if args.source not in (None, reader.name, *reader.aliases):
        raise InputError(f"conflicting flags: MODEL.keras and --from {args.source}")
    reference = get_framework(reader.name).load_model_file(args.model)
    source = read_model(reference)
    spec = spec_of(source)
    weights = load_params(args.weights) if args.weights else source.weights()
    candidate = get_framework(to).build(spec, weights, dtype=source.dtype)
    return reference, candidate, spec, reader.name, args.weights is None


def _from_layers(args: argparse.Namespace, to: str):
    """The model of ``--layers`` built in ``--from`` and in ``to`` from the same weights:
    ``(reference, candidate, spec, reference framework, transfer)``."""
    from xgrad.frameworks.registry import get_framework
    from xgrad.layers.text import parse_layers
    from xgrad.params import load_params
    from xgrad.spec import MLP

    if args.layers is None or args.input_dim is None:
        raise InputError("give a MODEL.keras file, or --layers and --input-dim")
    spec = MLP(inputs.shape(args.input_dim), parse_layers(args.layers, use_bias=not args.no_bias))
    ref_fw = get_framework(args.source or "numpy").name
    dtype = args.dtype or "float32"
    params = load_params(args.weights) if args.weights else None
    reference = get_framework(ref_fw).build(spec, params, dtype=dtype, seed=args.seed)
    candidate = get_framework(to).build(spec, params, dtype=dtype, seed=args.seed)
    return reference, candidate, spec, ref_fw, False


def run(args: argparse.Namespace) -> int:
    """Train both for ``--steps`` steps on one seeded batch and compare the weights."""
    from xgrad.frameworks.registry import get_framework
    from xgrad.losses import random_targets
    from xgrad.training import OptimizerSpec, compare_training
    from xgrad.training.optimizers import optimizer_for

    check_outputs(args)
    if args.steps <= 0:
        raise InputError(f"--steps must be a positive integer, got {args.steps}")
    if args.batch <= 0:
        raise InputError(f"--batch must be a positive integer, got {args.batch}")
    ref_opt = OptimizerSpec.parse(args.optimizer)
    cand_opt = OptimizerSpec.parse(args.port_optimizer) if args.port_optimizer else ref_opt
    loss = args.loss or "mse"
    to = get_framework(args.to).name  # known and installed, before anything is loaded
    models = _from_file if args.model is not None else _from_layers
    reference, candidate, spec, ref_fw, transfer = models(args, to)
    x = np.random.default_rng(args.seed).standard_normal((args.batch, *spec.input_shape))
    y = random_targets(loss, args.batch, spec.output_dim, args.seed)
    report = compare_training(
        reference,
        candidate,
        x,
        y,
        loss=loss,
        optimizers=(optimizer_for(ref_fw, ref_opt), optimizer_for(to, cand_opt)),
        steps=args.steps,
        transfer=transfer,
        rtol=args.rtol,
        explain=args.explain,
        title=args.title
        or f"{args.model or ref_fw} ({ref_opt.text()}) -> {to} ({cand_opt.text()})",
    )
    show(report, args, console())
    return status(report.ok)
