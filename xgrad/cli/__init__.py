"""The ``xgrad`` command line: ``compare``, ``examples``, ``sweep``, ``port``, ``backends``,
``train-compare``.

Exit status: 0 when every gradient matches, 1 on any mismatch or non-finite gradient, 2 on
bad usage or input (one line ``error: ...`` on stderr, never a traceback). Only the
frameworks named with ``--frameworks`` are imported. Every command takes ``--quiet``,
``--json PATH`` and ``--markdown PATH``.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import sys
import tomllib
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xgrad.errors import InputError, XgradError

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2
PORT_TARGETS = ("numpy", "jax", "flax", "tensorflow", "torch")  # frameworks a port is rebuilt in


class _UsageError(Exception):
    """Raised by the parser instead of printing usage and exiting."""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # --layer is not --layers
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, exit 2, no usage dump
        raise _UsageError(f"{message} (see '{self.prog} --help')")


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
    return _UsageError(f"unrecognized arguments: {' '.join(extra)}{hint} (see '{sub.prog} --help')")


# -- parsing helpers ---------------------------------------------------------------------


def parse_layers(text: str, *, use_bias: bool = True):
    """``"8:relu,layernorm,5:sigmoid"`` -> layers (see :mod:`xgrad.layers.text`)."""
    from xgrad.layers.text import parse_layers as parse

    return parse(text, use_bias=use_bias)


def _shape(text: str) -> int | tuple[int, ...]:
    try:
        dims = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        raise InputError(
            f"--input-dim takes a width (10) or an example shape (28x28), got {text!r}"
        ) from None
    if any(d <= 0 for d in dims):
        raise InputError(f"--input-dim must be positive, got {text!r}")
    return dims[0] if len(dims) == 1 else dims


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(p) for p in _csv(text)]
    except ValueError:
        raise InputError(f"{flag} takes comma-separated integers, got {text!r}") from None


def _load_array(path: str, flag: str, key: str | None = None) -> np.ndarray | None:
    """An array from ``.npy`` (or key ``key`` of ``.npz``), never unpickling anything."""
    p = Path(path)
    if p.suffix.lower() not in (".npy", ".npz"):
        raise InputError(f"{flag} {path!r}: expected a .npy or .npz file")
    if not p.is_file():
        raise InputError(f"{flag} {path!r}: no such file")
    try:
        with open(p, "rb") as f:  # our handle, closed even when np.load fails half-way
            if p.suffix.lower() == ".npy":
                return np.load(f, allow_pickle=False)
            with np.load(f, allow_pickle=False) as data:
                if key is None:
                    raise InputError(f"{flag} {path!r}: give a .npy file")
                if key not in data.files:
                    return None
                return data[key]
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{flag} {path!r} cannot be read: {exc}") from None


def _check_outputs(args) -> None:
    from xgrad._io import check_writable

    for name in ("json", "markdown", "plot", "out"):
        path = getattr(args, name, None)
        if path is not None:
            check_writable(path)
    plot = getattr(args, "plot", None)
    if plot is not None and not plot.lower().endswith(".png"):
        raise InputError(f"--plot {plot!r}: xgrad writes PNG images; name the file *.png")


def _console():
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def _show(report_like, args, console) -> None:
    if args.quiet:
        for line in getattr(report_like, "diagnosis_lines", list)():
            console.print(line, highlight=False, markup=False)
        console.print(report_like.summary(), highlight=False, markup=False)
    else:
        report_like.print(console)
    if args.json:
        report_like.to_json(args.json)
    if args.markdown:
        report_like.to_markdown(args.markdown)
    if getattr(args, "plot", None):
        report_like.plot(args.plot)


# -- commands ----------------------------------------------------------------------------


def cmd_compare(args) -> int:
    import xgrad

    _check_outputs(args)
    x = y = None
    if args.input:
        if args.batch is not None:
            raise InputError(
                "conflicting flags: --batch and --input (the batch is the number "
                "of rows in the input file); drop --batch"
            )
        x = _load_array(args.input, "--input", key="x")
        if x is None:
            raise InputError(f"--input {args.input!r}: the .npz file has no array named 'x'")
        if args.input.lower().endswith(".npz"):
            y = _load_array(args.input, "--input", key="y")
    input_dim = _shape(args.input_dim) if args.input_dim is not None else None
    if input_dim is None:
        if x is None or x.ndim < 2:
            raise InputError("--input-dim is required unless --input gives a batch of inputs")
        input_dim = x.shape[1] if x.ndim == 2 else tuple(x.shape[1:])
    shape = input_dim if isinstance(input_dim, tuple) else (input_dim,)
    if x is not None and tuple(x.shape[1:]) != shape:
        raise InputError(
            f"conflicting flags: --input-dim {args.input_dim} but the input file has examples "
            f"of shape {tuple(x.shape[1:])}"
        )
    spec = xgrad.MLP(input_dim, parse_layers(args.layers, use_bias=not args.no_bias))
    batch = args.batch if args.batch is not None else 2
    if x is None:
        if batch <= 0:
            raise InputError(f"--batch must be a positive integer, got {batch}")
        x = np.random.default_rng(args.seed).standard_normal((batch, *shape))
    cotangent = None
    if args.cotangent:
        if args.loss is not None:
            raise InputError(
                "conflicting flags: --cotangent and --loss (a cotangent replaces "
                "the loss); drop one"
            )
        cotangent = _load_array(args.cotangent, "--cotangent")
    loss = args.loss or "sum"
    if args.targets:
        if not xgrad.get_loss(loss).needs_target:
            raise InputError(
                f"conflicting flags: --targets with --loss {loss}, which takes no targets"
            )
        y = _load_array(args.targets, "--targets")
    if y is None and cotangent is None:
        from xgrad.losses import random_targets

        y = random_targets(loss, x.shape[0], spec.output_dim, args.seed)
    params = xgrad.load_params(args.params) if args.params else None
    report = xgrad.compare(
        spec,
        x,
        y,
        loss=loss,
        frameworks=args.frameworks,
        dtype=args.dtype,
        params=params,
        seed=args.seed,
        cotangent=cotangent,
        rtol=args.rtol,
        title=args.title,
        explain=args.explain,
    )
    _show(report, args, _console())
    return EXIT_OK if report.ok else EXIT_MISMATCH


class ReportSet:
    """Several reports shown and written together (``xgrad examples``)."""

    def __init__(self, schema: str, reports):
        self.schema = schema
        self.reports = list(reports)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.reports)

    def summary(self) -> str:
        bad = sum(not r.ok for r in self.reports)
        if not bad:
            return f"OK: every gradient matches in all {len(self.reports)} reports"
        return f"MISMATCH in {bad} of {len(self.reports)} reports"

    def diagnosis_lines(self) -> list[str]:
        return [line for r in self.reports for line in r.diagnosis_lines()]

    def print(self, console) -> None:
        for report in self.reports:
            report.print(console)
            console.print()

    def to_json(self, path) -> None:
        import json

        from xgrad._io import atomic_write

        data = {
            "schema": self.schema,
            "ok": self.ok,
            "reports": [r.to_dict() for r in self.reports],
        }
        text = json.dumps(data, indent=2, allow_nan=False) + "\n"
        atomic_write(path, lambda f: f.write(text), binary=False)

    def to_markdown(self, path) -> None:
        from xgrad._io import atomic_write

        text = "\n".join(r.to_markdown() for r in self.reports)
        atomic_write(path, lambda f: f.write(text), binary=False)


def cmd_examples(args) -> int:
    import xgrad
    from xgrad.examples import SEED_EXAMPLES

    _check_outputs(args)
    reports = [
        xgrad.compare(
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
    _show(result, args, _console())
    return EXIT_OK if result.ok else EXIT_MISMATCH


def cmd_sweep(args) -> int:
    import contextlib

    from xgrad.sweep import SweepGrid, SweepInterrupted, dask_executor, run_sweep

    _check_outputs(args)
    config = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise InputError(f"--config {args.config!r}: no such file")
        try:
            config = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"--config {args.config!r} is not valid TOML: {exc}") from None
    flags = {
        # a flag given empty ("$ACTS" unset) is an empty axis, refused: never the default
        "activations": None if args.activations is None else _csv(args.activations),
        "losses": None if args.losses is None else _csv(args.losses),
        "dtypes": None if args.dtypes is None else _csv(args.dtypes),
        "batch_sizes": _ints(args.batch_sizes, "--batch-sizes")
        if args.batch_sizes is not None
        else None,
        "seeds": None if args.seeds is None else _ints(args.seeds, "--seeds"),
        "input_dim": args.input_dim,
        "hidden": None if args.hidden is None else _ints(args.hidden, "--hidden"),
        "output_dim": args.output_dim,
        "layers": args.layers,
        "frameworks": None if args.frameworks is None else _csv(args.frameworks),
        "rtol": args.rtol,
    }
    grid = SweepGrid.from_mapping({**config, **{k: v for k, v in flags.items() if v is not None}})
    for note in grid.notes():  # runs, but cannot mean what it seems: say so before it runs
        print(f"note: {note}", file=sys.stderr)
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
        return 130
    _show(result, args, _console())
    return EXIT_OK if result.ok else EXIT_MISMATCH


def cmd_port(args) -> int:
    import xgrad

    out = Path(args.out)
    _check_outputs(args)
    if args.to not in PORT_TARGETS:  # before anything is written or imported
        raise InputError(f"--to {args.to!r}: choose one of {', '.join(PORT_TARGETS)}")
    suffix = out.suffix.lower()
    state_dict = args.to == "torch" and suffix in (".pt", ".pth", ".safetensors")
    if suffix in (".pt", ".pth") and args.to != "torch":
        raise InputError(
            f"--out {args.out!r}: .pt files are for --to torch; use .npz or .safetensors"
        )
    if suffix not in (".npz", ".safetensors", ".pt", ".pth"):
        raise InputError(
            f"--out {args.out!r}: the name must end in .npz or .safetensors (or .pt with "
            "--to torch)"
        )
    model_path = Path(args.model)
    if model_path.is_dir():
        raise InputError(f"model file {args.model!r} is a folder, not a .keras file")
    if not model_path.is_file():
        raise InputError(f"model file {args.model!r} does not exist")
    if model_path.suffix.lower() != ".keras":
        raise InputError(f"model file {args.model!r}: expected a .keras file (Keras 3 format)")
    if args.batch <= 0:
        raise InputError(f"--batch must be a positive integer, got {args.batch}")
    loss = args.loss or "projection"
    xgrad.get_loss(loss)
    get = xgrad.get_framework
    get(args.to)  # installed?
    from xgrad.convert import spec_of
    from xgrad.frameworks.tensorflow import load_keras_file

    keras_model = load_keras_file(args.model)
    source = xgrad.read_model(keras_model)
    spec = spec_of(source)
    weights = source.weights()
    if state_dict:  # torch's own names and layout, read back into a freshly built module
        candidate, round_trip, count = _port_state_dict(spec, weights, source.dtype, out)
        kind = "a PyTorch state_dict"
    else:
        xgrad.save_params(out, weights)
        loaded = xgrad.load_params(out)
        round_trip = list(loaded) == list(weights) and all(
            np.array_equal(loaded[k], np.asarray(weights[k], dtype=np.float64)) for k in weights
        )
        candidate = get(args.to).build(spec, loaded, dtype=source.dtype).native
        count, kind = len(weights), "canonical names"
    x = np.random.default_rng(args.seed).standard_normal((args.batch, *spec.input_shape))
    from xgrad.losses import random_targets

    y = random_targets(loss, args.batch, spec.output_dim, args.seed)
    report = xgrad.compare_models(
        keras_model,
        candidate,
        x,
        y,
        loss=loss,
        transfer=False,
        title=f"{args.model} -> {args.to} ({out.name})",
    )
    console = _console()
    _show(report, args, console)
    console.print(
        f"weights written to {out} ({count} arrays, {kind}); round trip "
        f"{'bit-exact' if round_trip else 'NOT bit-exact'}",
        highlight=False,
    )
    return EXIT_OK if report.ok and round_trip else EXIT_MISMATCH


def _port_state_dict(spec, weights, dtype: str, out: Path):
    """Write the torch build's ``state_dict`` to ``out``, read it back (``weights_only``) into
    a module built from other weights; ``(module, round trip bit-exact, tensor count)``."""
    import torch

    import xgrad
    from xgrad.frameworks.torch.files import load_state_dict, save_state_dict

    torch_fw = xgrad.get_framework("torch")
    written = torch_fw.native_weights(torch_fw.build(spec, weights, dtype=dtype))
    save_state_dict(out, written)
    loaded = load_state_dict(out)
    round_trip = set(loaded) == set(written) and all(
        torch.equal(loaded[k], written[k]) for k in written
    )
    fresh = torch_fw.build(spec, xgrad.init_params(spec, seed=1), dtype=dtype).native
    fresh.load_state_dict(loaded, strict=True)
    return fresh, round_trip, len(written)


def cmd_backends(args) -> int:
    from xgrad.backends import compare_backends

    _check_outputs(args)
    if args.batch <= 0:
        raise InputError(f"--batch must be a positive integer, got {args.batch}")
    if args.timeout <= 0:
        raise InputError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    model_path = Path(args.model)
    if model_path.is_dir():
        raise InputError(f"model file {args.model!r} is a folder, not a .keras file")
    if not model_path.is_file():
        raise InputError(f"model file {args.model!r} does not exist")
    if model_path.suffix.lower() != ".keras":
        raise InputError(f"model file {args.model!r}: expected a .keras file (Keras 3 format)")
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
    _show(report, args, _console())
    return EXIT_OK if report.ok else EXIT_MISMATCH


def cmd_train_compare(args) -> int:
    import xgrad
    from xgrad.losses import random_targets
    from xgrad.training import OptimizerSpec, compare_training
    from xgrad.training.optimizers import optimizer_for

    _check_outputs(args)
    if args.steps <= 0:
        raise InputError(f"--steps must be a positive integer, got {args.steps}")
    if args.batch <= 0:
        raise InputError(f"--batch must be a positive integer, got {args.batch}")
    ref_opt = OptimizerSpec.parse(args.optimizer)
    cand_opt = OptimizerSpec.parse(args.port_optimizer) if args.port_optimizer else ref_opt
    loss = args.loss or "mse"
    get = xgrad.get_framework
    to = get(args.to).name  # known and installed, before anything is loaded
    if args.model is not None:
        for flag, value in (("--layers", args.layers), ("--dtype", args.dtype)):
            if value is not None:
                raise InputError(
                    f"conflicting flags: MODEL.keras and {flag} (the file gives the model and "
                    "its dtype); drop one"
                )
        if args.source not in (None, "tensorflow", "tf", "keras"):
            raise InputError(f"conflicting flags: MODEL.keras and --from {args.source}")
        from xgrad.convert import spec_of
        from xgrad.frameworks.tensorflow import load_keras_file

        reference = load_keras_file(args.model)
        source = xgrad.read_model(reference)
        spec, dtype, ref_fw = spec_of(source), source.dtype, "tensorflow"
        weights = xgrad.load_params(args.weights) if args.weights else source.weights()
        candidate = get(to).build(spec, weights, dtype=dtype)
        transfer = args.weights is None
    else:
        if args.layers is None or args.input_dim is None:
            raise InputError("give a MODEL.keras file, or --layers and --input-dim")
        spec = xgrad.MLP(
            _shape(args.input_dim), parse_layers(args.layers, use_bias=not args.no_bias)
        )
        ref_fw = get(args.source or "numpy").name
        dtype = args.dtype or "float32"
        params = xgrad.load_params(args.weights) if args.weights else None
        reference = get(ref_fw).build(spec, params, dtype=dtype, seed=args.seed)
        candidate = get(to).build(spec, params, dtype=dtype, seed=args.seed)
        transfer = False
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
    _show(report, args, _console())
    return EXIT_OK if report.ok else EXIT_MISMATCH


# -- the parser --------------------------------------------------------------------------


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    from xgrad.frameworks.base import ALL_DTYPES

    p.add_argument(
        "--frameworks",
        default=None,
        metavar="LIST",
        help="comma-separated: numpy,jax,flax,tensorflow,torch (default: all installed)",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=ALL_DTYPES,
        help="the dtype every framework computes in (default float32; 16-bit: jax, flax, "
        "tensorflow, torch)",
    )
    p.add_argument("--seed", type=_seed, default=0, help="seed of params, inputs and targets")
    p.add_argument(
        "--rtol",
        type=float,
        default=None,
        help="normwise tolerance (default: float32 1e-5, float64 1e-10)",
    )


def _outputs(p: argparse.ArgumentParser, *, plot: bool = False) -> None:
    p.add_argument("--json", metavar="PATH", help="write the report as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the report as Markdown")
    if plot:
        p.add_argument("--plot", metavar="PATH", help="write a PNG of the errors")
    p.add_argument("--quiet", action="store_true", help="print only the diagnoses and verdict")


def _keras_file(p, *, seed_help: str, loss_default: str | None) -> None:
    """The arguments of a command comparing a .keras file on a seeded random batch."""
    from xgrad.losses import LOSSES

    p.add_argument("model", metavar="MODEL.keras", help="a Keras 3 model file")
    p.add_argument("--batch", type=int, default=8, help="rows of random input (default 8)")
    p.add_argument("--seed", type=_seed, default=0, help=seed_help)
    p.add_argument(
        "--loss",
        choices=list(LOSSES),
        default=loss_default,
        help="default: projection, sum(output * r) for a seeded random r (never degenerate)",
    )


def build_parser() -> argparse.ArgumentParser:
    from xgrad import __version__
    from xgrad.losses import LOSSES

    parser = _Parser(
        prog="xgrad",
        description="Do these models compute the same gradients in NumPy, JAX, Flax, "
        "TensorFlow/Keras and PyTorch, and if not, where and why not?",
    )
    parser.add_argument("--version", action="version", version=f"xgrad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "compare",
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
    _outputs(p, plot=True)
    _common(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "examples",
        help="the seed article's three examples",
        description="Run the seed article's three examples through every "
        "framework and print their reports.",
    )
    _outputs(p)
    _common(p)
    p.set_defaults(func=cmd_examples)

    p = sub.add_parser(
        "sweep",
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
    _outputs(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser(
        "port",
        help="convert a .keras model's weights and verify the port",
        description="Load a .keras model in Keras safe mode, write its weights in canonical "
        "names, rebuild the model in the target framework from the written file, and compare "
        "the two on a seeded random batch.",
    )
    _keras_file(p, seed_help="seed of the random input", loss_default=None)
    p.add_argument("--to", required=True, help="numpy, jax, flax, tensorflow or torch")
    p.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="weights file: .npz or .safetensors in canonical names; with --to torch, .pt or "
        ".safetensors hold the module's state_dict",
    )
    _outputs(p)
    p.set_defaults(func=cmd_port)

    p = sub.add_parser(
        "backends",
        help="one .keras file under Keras' TensorFlow, JAX and PyTorch backends",
        description="Load one .keras file (safe mode) under each Keras backend, each in its "
        "own process, compute the gradients of the same weights on the same seeded batch, and "
        "report them side by side against xgrad's float64 NumPy model of its layers. Exit 0: "
        "every backend matches; 1: one does not; 2: error.",
    )
    _keras_file(p, seed_help="seed of the input and targets", loss_default="projection")
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
    _outputs(p)
    p.set_defaults(func=cmd_backends)

    p = sub.add_parser(
        "train-compare",
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
    p.add_argument("--seed", type=_seed, default=0, help="seed of weights, input and targets")
    p.add_argument("--rtol", type=float, default=None, help="base tolerance (grows as sqrt(step))")
    p.add_argument("--title", default=None, help="a heading for the report")
    p.add_argument(
        "--explain",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="diagnose the first divergence (default: when the weights part)",
    )
    _outputs(p, plot=True)
    p.set_defaults(func=cmd_train_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 match, 1 mismatch, 2 usage or input error)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any framework is imported
    parser = build_parser()
    try:
        words = list(sys.argv[1:] if argv is None else argv)
        command = next((w for w in words if not w.startswith("-")), None)
        unknown = [w for w in words if w.startswith("--") and not _known(parser, command, w)]
        if unknown:  # before argparse's own checks, which would only say what is missing
            raise _unrecognized(parser, command, unknown)
        args, extra = parser.parse_known_args(words)
        if extra:
            raise _unrecognized(parser, args.command, extra)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        return args.func(args)
    except (_UsageError, XgradError) as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
