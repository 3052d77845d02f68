"""The ``rnnkit`` command line: ``rnnkit <task> <verb> [options]`` (``python -m rnnkit`` is the same).

Every ``train`` is built from two Config dataclasses, the task's and ``TrainConfig``: one flag
per field, with the field's help and default, so defaults live in one place. An error a user
can fix (a bad flag value, an unreadable file, a checkpoint that does not fit) prints
``rnnkit: error: ...`` and exits with status 2; ``RNNKIT_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from datetime import datetime
from pathlib import Path

from . import __version__

EXIT_USER_ERROR = 2


def add_config_flags(parser: argparse.ArgumentParser, config_cls, suppress: bool = False,
                     defaults: dict | None = None) -> None:
    """One ``--flag`` per field of a Config dataclass; its help and default shown in --help.

    With ``suppress``, a flag not given is absent from the parsed namespace, so a caller can
    tell what the user typed from what a default (or a resumed run's config) supplies.
    ``defaults`` overrides fields' defaults for one command (a task's own learning rate).
    """
    defaults = defaults or {}
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        kind = hints[f.name]
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        flag = "--" + f.name.replace("_", "-")
        value = defaults.get(f.name, f.default)
        text = f"{f.metadata.get('help', '')} (default: {value})".replace("%", "%%")  # argparse formats help
        default = argparse.SUPPRESS if suppress else value
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=text)
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=default, help=text, metavar=kind.__name__.upper())


def config_from(args: argparse.Namespace, config_cls, base: dict | None = None):
    """A Config from its defaults, updated by ``base`` (a resumed run's values) and then by the flags given."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    values = {k: v for k, v in (base or {}).items() if k in names}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return config_cls(**values)


def build_parser() -> argparse.ArgumentParser:
    from . import bench
    from .demo import DemoConfig
    from .tasks.classify import CLASSIFY_TRAIN_DEFAULTS, ClassifyConfig
    from .tasks.lm import LM_TRAIN_DEFAULTS, LMConfig
    from .tasks.speech import SPEECH_TRAIN_DEFAULTS, SpeechConfig
    from .tasks.tag import TAG_TRAIN_DEFAULTS, TagConfig
    from .train.trainer import TrainConfig

    parser = argparse.ArgumentParser(prog="rnnkit", description="Recurrent neural networks on PyTorch.")
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser("demo", help="train a character language model on Shakespeare for a few minutes")
    add_config_flags(demo, DemoConfig)
    commands.add_parser("cells", help="list the registered cells")
    bench.add_arguments(commands.add_parser("bench", help="time every cell against torch.nn, as ratios",
                                            description=bench.__doc__.split("\n\n")[0]))

    lm = commands.add_parser("lm", help="language model: train, generate, evaluate")
    verbs = lm.add_subparsers(dest="verb", metavar="VERB", required=True)
    train = verbs.add_parser("train", help="train a character (or word) language model",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--out", help="run directory (default: runs/lm-DATE-TIME)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last/ checkpoint")
    add_config_flags(train.add_argument_group("model and data"), LMConfig, suppress=True)
    add_config_flags(train.add_argument_group("training"), TrainConfig, suppress=True, defaults=LM_TRAIN_DEFAULTS)
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    generate = verbs.add_parser("generate", help="stream text from a trained model")
    generate.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint directory")
    generate.add_argument("--prompt", default="", help="text to continue")
    generate.add_argument("--length", type=int, default=500, help="tokens to generate")
    generate.add_argument("--temperature", type=float, default=0.8, help="0: always the most likely token")
    generate.add_argument("--top-k", type=int, default=0, help="sample among the k most likely (0: all)")
    generate.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: all)")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--device", default="cpu")
    evaluate = verbs.add_parser("evaluate", help="nats and bits per character beside the unigram baseline")
    evaluate.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint directory")
    evaluate.add_argument("--data", help="a UTF-8 text file (default: the validation split of the training text)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--device", default="cpu")

    classify = commands.add_parser("classify", help="text classification: train, evaluate, predict")
    verbs = classify.add_subparsers(dest="verb", metavar="VERB", required=True)
    train = verbs.add_parser("train", help="train a text classifier (default: movie-review polarity)",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--out", help="run directory (default: runs/classify-DATE-TIME)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last/ checkpoint")
    add_config_flags(train.add_argument_group("model and data"), ClassifyConfig, suppress=True)
    add_config_flags(train.add_argument_group("training"), TrainConfig, suppress=True,
                     defaults=CLASSIFY_TRAIN_DEFAULTS)
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate = verbs.add_parser("evaluate", help="accuracy and macro-F1 beside the majority-class baseline")
    evaluate.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint directory")
    evaluate.add_argument("--data", help="a CSV, TSV or JSONL file (default: the training data); without a "
                                         "split column, a file other than the training data is scored whole")
    evaluate.add_argument("--split", default="test", help="train, dev or test")
    evaluate.add_argument("--format", help="csv, tsv or jsonl (default: from the extension)")
    evaluate.add_argument("--text-column", help="default: the training run's")
    evaluate.add_argument("--label-column", help="default: the training run's")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--device", default="cpu")
    predict = verbs.add_parser("predict", help="the label and its probability for a text, or for every line of "
                                               "a file")
    predict.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint directory")
    predict.add_argument("text", nargs="?", help="the text to classify")
    predict.add_argument("--file", help="a UTF-8 text file: one text per line (blank lines are skipped)")
    predict.add_argument("--device", default="cpu")

    speech = commands.add_parser("speech", help="multivariate sequence classification (JapaneseVowels): train, "
                                                "evaluate")
    verbs = speech.add_subparsers(dest="verb", metavar="VERB", required=True)
    train = verbs.add_parser("train", help="train a speaker classifier on the bundled JapaneseVowels",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--out", help="run directory (default: runs/speech-DATE-TIME)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last/ checkpoint")
    add_config_flags(train.add_argument_group("model and data"), SpeechConfig, suppress=True)
    add_config_flags(train.add_argument_group("training"), TrainConfig, suppress=True, defaults=SPEECH_TRAIN_DEFAULTS)
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate = verbs.add_parser("evaluate", help="accuracy and macro-F1 beside the majority-class baseline")
    evaluate.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint directory")
    evaluate.add_argument("--data", help="not yet supported: speech reads only the bundled JapaneseVowels for now")
    evaluate.add_argument("--split", default="test", help="train, dev or test")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--device", default="cpu")

    tag = commands.add_parser("tag", help="named-entity tagging with a BiLSTM-CRF: train, evaluate, predict")
    verbs = tag.add_subparsers(dest="verb", metavar="VERB", required=True)
    train = verbs.add_parser("train", help="train a tagger (default: the bundled WNUT-16 tweets)",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--out", help="run directory (default: runs/tag-DATE-TIME)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last/ checkpoint")
    add_config_flags(train.add_argument_group("model and data"), TagConfig, suppress=True)
    add_config_flags(train.add_argument_group("training"), TrainConfig, suppress=True, defaults=TAG_TRAIN_DEFAULTS)
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate = verbs.add_parser("evaluate", help="entity F1, precision and recall beside the most-frequent-tag "
                                                 "baseline")
    evaluate.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint directory")
    evaluate.add_argument("--data", help="a CoNLL-style file (default: the training data); a file other than the "
                                         "training data is scored whole")
    evaluate.add_argument("--split", default="test", help="train, dev or test")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--device", default="cpu")
    predict = verbs.add_parser("predict", help="the entities found in a text")
    predict.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint directory")
    predict.add_argument("text", help="the text to tag")
    predict.add_argument("--device", default="cpu")
    return parser


def run_train(args: argparse.Namespace, task: str, train, config_cls, train_defaults: dict,
              default_minutes: float) -> int:
    """``rnnkit <task> train``: the task's Config and TrainConfig from the flags given, over the
    resumed run's values (with --resume) or the task's defaults; no budget means ``default_minutes``."""
    from .train import checkpoint
    from .train.trainer import TrainConfig

    if args.resume and not args.out:
        raise ValueError("--resume needs --out: the run directory to continue")
    out = Path(args.out or f"runs/{task}-{datetime.now():%Y%m%d-%H%M%S}")
    saved = checkpoint.load(out / "last").config if args.resume and (out / "last").exists() else {}
    config = config_from(args, config_cls, saved)
    train_config = config_from(args, TrainConfig, saved.get("train") or train_defaults)
    if train_config.steps is None and train_config.max_minutes is None:
        train_config.max_minutes = default_minutes
    train(config, train_config, out, resume=args.resume, progress=not args.no_progress)
    return 0


def print_result(result: dict, as_json: bool) -> int:
    """``evaluate``'s output: one JSON object with --json, else one ``key: value`` line per metric."""
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    return 0


def run_lm(args: argparse.Namespace) -> int:
    from .tasks import lm

    if args.verb == "train":
        return run_train(args, lm.NAME, lm.train, lm.LMConfig, lm.LM_TRAIN_DEFAULTS, lm.DEFAULT_MINUTES)
    model = lm.TrainedLM.load(args.checkpoint, args.device)
    if args.verb == "generate":
        sys.stdout.write(args.prompt)
        for piece in model.generate(args.prompt, args.length, args.temperature, args.top_k, args.top_p, args.seed):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    return print_result(model.evaluate(args.data), args.json)


def run_classify(args: argparse.Namespace) -> int:
    from .data import read_text
    from .tasks import classify

    if args.verb == "train":
        return run_train(args, classify.NAME, classify.train, classify.ClassifyConfig,
                         classify.CLASSIFY_TRAIN_DEFAULTS, classify.DEFAULT_MINUTES)
    model = classify.TrainedClassifier.load(args.checkpoint, args.device)
    if args.verb == "predict":
        if (args.text is None) == (args.file is None):
            raise ValueError("give either a text to classify or --file FILE, not both or neither")
        if args.text is not None:
            prediction = model.predict(args.text)[0]
            print(f"{prediction.label}\t{prediction.probability:.4f}")
            return 0
        lines = [line for line in read_text(args.file).split("\n") if line.strip()]
        if not lines:
            raise ValueError(f"{args.file} has no text lines to classify")
        for line, prediction in zip(lines, model.predict(lines)):
            print(f"{prediction.label}\t{prediction.probability:.4f}\t{line}")
        return 0
    return print_result(model.evaluate(args.data, args.split, args.format, args.text_column, args.label_column),
                        args.json)


def run_speech(args: argparse.Namespace) -> int:
    from .tasks import speech

    if args.verb == "train":
        return run_train(args, speech.NAME, speech.train, speech.SpeechConfig, speech.SPEECH_TRAIN_DEFAULTS,
                         speech.DEFAULT_MINUTES)
    return print_result(speech.TrainedSpeech.load(args.checkpoint, args.device).evaluate(args.data, args.split),
                        args.json)


def run_tag(args: argparse.Namespace) -> int:
    from .tasks import tag

    if args.verb == "train":
        return run_train(args, tag.NAME, tag.train, tag.TagConfig, tag.TAG_TRAIN_DEFAULTS, tag.DEFAULT_MINUTES)
    model = tag.TrainedTagger.load(args.checkpoint, args.device)
    if args.verb == "predict":
        entities = model.predict(args.text)[0]
        for entity in entities:
            print(f"{entity.type}\t{entity.text}")
        if not entities:
            print("(no entities)")
        return 0
    return print_result(model.evaluate(args.data, args.split), args.json)


def dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "demo":
        from .demo import DemoConfig, run_demo

        run_demo(config_from(args, DemoConfig))
        return 0
    if args.command == "bench":
        from .bench import run

        return run(args)
    if args.command == "cells":
        from .cells import cells

        print("\n".join(cells()))
        return 0
    if args.command == "lm":
        return run_lm(args)
    if args.command == "classify":
        return run_classify(args)
    if args.command == "speech":
        return run_speech(args)
    if args.command == "tag":
        return run_tag(args)
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
