"""The ``rnnkit`` command line: ``rnnkit <command> [options]``."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from . import __version__


def _add_config_flags(parser: argparse.ArgumentParser, config_cls) -> None:
    """One ``--flag`` per field of a Config dataclass, its default shown in --help."""
    for field in dataclasses.fields(config_cls):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, dest=field.name, type=type(field.default), default=field.default,
                            help=f"(default: {field.default})")


def build_parser() -> argparse.ArgumentParser:
    from .demo import DemoConfig

    parser = argparse.ArgumentParser(prog="rnnkit", description="Recurrent neural networks on PyTorch.")
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser("demo", help="train a small LSTM on generated waves and watch its loss fall")
    _add_config_flags(demo, DemoConfig)
    commands.add_parser("cells", help="list the registered cells")
    from . import bench

    bench.add_arguments(commands.add_parser("bench", help="time every cell against torch.nn, as ratios",
                                            description=bench.__doc__.split("\n\n")[0]))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import DemoConfig, run_demo

        fields = {f.name for f in dataclasses.fields(DemoConfig)}
        run_demo(DemoConfig(**{k: v for k, v in vars(args).items() if k in fields}))
        return 0
    if args.command == "bench":
        from .bench import run

        return run(args)
    if args.command == "cells":
        from .cells import cells

        print("\n".join(cells()))
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
