"""The ``rnnkit`` command line: ``rnnkit <task> <verb> [options]`` (``python -m rnnkit`` is the same).

Built from the task registry (``rnnkit.tasks.registry``): a task's ``train`` takes one flag per field of its
Config and of ``TrainConfig``, every other verb one per field of its own dataclass; the shared flags are
written once, in ``SHARED``. Defaults live in the dataclasses, shown once in --help (no default formatter).
A user's error prints ``rnnkit: error: ...``, status 2; ``RNNKIT_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import types
import typing
from datetime import datetime
from pathlib import Path

from ._version import __version__

EXIT_USER_ERROR = 2

# The flags shared by every command that takes them, spelled and explained once.
SHARED = {
    "out": dict(help="run directory (default: runs/TASK-DATE-TIME)"),
    "resume": dict(action="store_true", help="continue the run in --out from its last/ checkpoint"),
    "no_progress": dict(action="store_true", help="no progress bar"),
    "checkpoint": dict(help="a run directory or a checkpoint directory"),
    "device": dict(default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)"),
    "json": dict(action="store_true", help="print one JSON object"),
}


def add_shared(parser: argparse.ArgumentParser, *names: str, required: tuple[str, ...] = (), **helps: str) -> None:
    """The SHARED flags ``names``; ``required`` ones must be given; ``helps`` replaces a flag's help for one command."""
    for name in names:
        options = {**SHARED[name], **({"help": helps[name]} if name in helps else {})}
        parser.add_argument("--" + name.replace("_", "-"), dest=name, required=name in required, **options)


def add_config_flags(parser, config_cls, suppress: bool = False, defaults: dict | None = None) -> None:
    """One flag per field of a dataclass, its help and default from the field (the default shown once).

    Field metadata: ``help``; ``nargs`` makes a positional argument; ``flag`` and ``aliases`` spell the flag
    (``--hidden-size``, alias ``--hidden-channels``); ``choices``; ``repeatable`` (``--column a --column b``,
    joined with commas); ``several`` (``--cell a b``). With ``suppress`` a flag not given is absent from the
    namespace, so a resumed run's config fills it; ``defaults`` overrides fields' defaults (a task's own lr).
    """
    defaults = defaults or {}
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        kind, meta = hints[f.name], f.metadata
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        value = defaults.get(f.name, f.default)
        text = meta.get("help", "")
        if not (value is None or value is False or value == "" or value is dataclasses.MISSING or "default" in text):
            text += f" (default: {value})"
        options = dict(help=text.replace("%", "%%"), default=argparse.SUPPRESS if suppress else value)  # % formats
        if "nargs" in meta:
            parser.add_argument(f.name, nargs=meta["nargs"], metavar=meta.get("metavar"), **options)  # strings
            continue
        flags = [meta.get("flag", "--" + f.name.replace("_", "-")), *meta.get("aliases", ())]
        if kind is bool:
            parser.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, **options)
        elif meta.get("repeatable"):
            parser.add_argument(*flags, dest=f.name, action="append", metavar="NAME", **options)
        elif meta.get("several"):
            parser.add_argument(*flags, dest=f.name, action="extend", nargs="+", **options)
        else:
            metavar = meta.get("metavar", None if "choices" in meta else kind.__name__.upper())  # choices show
            parser.add_argument(*flags, dest=f.name, type=kind, choices=meta.get("choices"), metavar=metavar, **options)


def config_from(args: argparse.Namespace, config_cls, base: dict | None = None):
    """A Config from its defaults, updated by ``base`` (a resumed run's values), then by the flags given."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    values = {k: v for k, v in (base or {}).items() if k in fields}
    for name, value in vars(args).items():
        if name in fields:
            values[name] = ",".join(value) if fields[name].metadata.get("repeatable") and value else value
    return config_cls(**values)


def build_parser() -> argparse.ArgumentParser:
    from . import bench
    from .cells import cells
    from .demo import DemoConfig, run_demo
    from .export import export_checkpoint
    from .gradients import GradientsArgs
    from .gradients import command as run_gradients
    from .tasks.registry import specs
    from .train.trainer import TrainConfig

    parser = argparse.ArgumentParser(prog="rnnkit", description="Recurrent neural networks on PyTorch.")
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser("demo", help="train a character language model on Shakespeare for a few minutes")
    add_config_flags(demo, DemoConfig)
    demo.set_defaults(handler=lambda args: run_demo(config_from(args, DemoConfig)) and None)  # None: status 0
    commands.add_parser("cells", help="list the registered cells").set_defaults(
        handler=lambda args: print("\n".join(cells())))
    info = commands.add_parser("info", help="versions, CPU, C++ loops, CUDA and the backend auto picks per cell")
    add_shared(info, "json", json="print every fact as one JSON object")
    info.set_defaults(handler=run_info)
    timing = commands.add_parser("bench", help="time every cell against torch.nn, as ratios",
                                 description=bench.__doc__.split("\n\n")[0])
    bench.add_arguments(timing)
    timing.set_defaults(handler=bench.run)
    for spec in specs().values():
        task = commands.add_parser(spec.name, help=spec.help, description=spec.help)
        verbs = task.add_subparsers(dest="verb", metavar="PROBLEM" if spec.variants else "VERB", required=True)
        for variant, text in (spec.variants or {None: spec.train_help}).items():
            train = verbs.add_parser(variant or "train", help=text, description=text)
            add_shared(train, "out", "resume")
            if spec.variants:  # lab: one command per problem, which trains or (--checkpoint) evaluates
                add_shared(train, "checkpoint", "json", checkpoint="evaluate this trained run (or checkpoint) "
                           "instead of training", json="print the test result as one JSON object")
            add_config_flags(train.add_argument_group("model and data"), spec.config, suppress=True)
            add_config_flags(train.add_argument_group("training"), TrainConfig, suppress=True,
                             defaults=train_defaults(spec, variant))
            add_shared(train, "no_progress")
            train.set_defaults(handler=run_train, spec=spec, variant=variant)
        for name, verb in spec.verbs.items() if not spec.variants else ():
            command = verbs.add_parser(name, help=verb.help, description=verb.help)
            add_shared(command, "checkpoint", "device", *(["json"] if verb.json else []), required=("checkpoint",),
                       **({"json": verb.json} if verb.json else {}))
            if verb.args is not None:
                add_config_flags(command, verb.args)
            command.set_defaults(handler=run_verb, spec=spec, verb_spec=verb)
    gradients = commands.add_parser("gradients", help="per-time-step gradient norms dL/dh_t, spectral radius, "
                                                      "clipping; a log-scale plot comparing cells")
    add_config_flags(gradients, GradientsArgs)
    add_shared(gradients, "json", json="print every number as one JSON object")
    gradients.set_defaults(handler=run_gradients)
    export = commands.add_parser("export", help="write a trained model to ONNX or TorchScript (dynamic batch and "
                                                "time) and check the file against PyTorch")
    add_shared(export, "checkpoint", required=("checkpoint",))
    export.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    export.add_argument("--out", required=True, help="the file to write, e.g. model.onnx")
    export.set_defaults(handler=lambda args: print(export_checkpoint(args.checkpoint, args.out, args.format)
                                                   .describe()))
    return parser


def run_train(args: argparse.Namespace) -> int:
    """``rnnkit <task> train`` (lab: ``rnnkit lab PROBLEM``): the task's Config and TrainConfig from the flags
    given, over the resumed run's values (with --resume) or the task's defaults; no budget (neither --steps nor
    --max-minutes) means the task's default steps. With --checkpoint (lab) the trained run is evaluated instead."""
    from .console import make_console
    from .train import checkpoint
    from .train.trainer import TrainConfig

    spec, variant, as_json = args.spec, args.variant, getattr(args, "json", False)
    if getattr(args, "checkpoint", None):
        return print_result(spec.verbs["evaluate"].run(spec.load(args.checkpoint), args, as_json), as_json)
    if args.resume and not args.out:
        raise ValueError("--resume needs --out: the run directory to continue")
    out = Path(args.out or f"runs/{'-'.join(filter(None, (spec.name, variant)))}-{datetime.now():%Y%m%d-%H%M%S}")
    saved = checkpoint.load(out / "last").config if args.resume and checkpoint.recover(out / "last") else {}
    config = config_from(args, spec.config, saved)
    train_config = config_from(args, TrainConfig, saved.get("train") or train_defaults(spec, variant, args))
    summary = None
    with processes(args, train_config.device) as rank_console:
        console = rank_console or (make_console(stderr=True) if as_json else None)
        summary = spec.train(config, train_config, out, resume=args.resume, console=console,
                             progress=not (args.no_progress or as_json), **({"variant": variant} if variant else {}))
    if as_json and summary is not None:  # None: a rank > 0 under torchrun, rank 0 reports
        print(json.dumps(summary["test"]))
    return 0


def train_defaults(spec, variant: str | None, args: argparse.Namespace | None = None) -> dict:
    """The task's TrainConfig values (the variant's, for lab) with its default step count; for ``args`` that give
    --max-minutes without --steps, without any step count: a time budget alone plans the steps that fit it."""
    defaults = spec.variant_defaults(variant) if variant else spec.train_defaults
    if args is not None and hasattr(args, "max_minutes") and not hasattr(args, "steps"):
        defaults = {k: v for k, v in defaults.items() if k != "steps"}
    return defaults


def run_verb(args: argparse.Namespace) -> int:
    """``rnnkit <task> <verb>``: the trained object's method of the verb's name with the verb's fields as keywords
    (or the verb's own ``run``); a dict result is printed by ``print_result``."""
    verb, as_json = args.verb_spec, getattr(args, "json", False)
    trained = args.spec.load(args.checkpoint, args.device)
    options = config_from(args, verb.args) if verb.args is not None else None
    if verb.run is not None:
        return print_result(verb.run(trained, options, as_json), as_json)
    return print_result(getattr(trained, args.verb)(**(dataclasses.asdict(options) if options else {})), as_json)


@contextlib.contextmanager
def processes(args: argparse.Namespace, device: str):
    """A training command's process group under torchrun (nothing in one process). Yields the task's console:
    None (its own) on rank 0, a silent one on the other ranks, which leave once the Trainer is done."""
    from .console import make_console
    from .train import distributed

    group = distributed.setup(device)
    if not group.active:
        yield None
        return
    if not args.out:
        raise ValueError(f"--out is needed under torchrun (WORLD_SIZE={group.world_size}): every process must "
                         "write to and resume from the same run directory")
    distributed.end_workers_after_fit()
    try:
        yield None if group.is_main else make_console(quiet=True)
    except distributed.WorkerFinished:
        pass
    finally:
        distributed.end_workers_after_fit(False)
        distributed.cleanup()


def print_result(result: dict | None, as_json: bool) -> int:
    """A verb's dict: one JSON object with --json, else one ``key: value`` line per metric; None: printed already."""
    if result is None:
        return 0
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from .info import collect, format_info

    facts = collect()
    print(json.dumps(facts, indent=2) if args.json else format_info(facts))
    return 0


def dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The command's handler (set by build_parser; None means status 0); ``rnnkit`` alone prints the help."""
    if hasattr(args, "handler"):
        return args.handler(args) or 0
    parser.print_help()
    return 0


def main(argv: list[str] | None = None) -> int:
    from .backends import NotSupported
    from .train.checkpoint import CheckpointError
    from .train.trainer import TrainingDiverged

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return dispatch(args, parser)
    except (ValueError, ImportError, FileNotFoundError, FileExistsError, IsADirectoryError, CheckpointError,
            NotSupported, TrainingDiverged) as error:
        if os.environ.get("RNNKIT_DEBUG"):
            raise
        print(f"rnnkit: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
