"""The ``rnnkit`` command line: ``rnnkit <task> <verb> [options]`` (``python -m rnnkit`` is the same).

Every ``train`` is built from two Config dataclasses, the task's and ``TrainConfig``: one flag
per field, with the field's help and default, so defaults live in one place. An error a user
can fix (a bad flag value, an unreadable file, a checkpoint that does not fit) prints
``rnnkit: error: ...`` and exits with status 2; ``RNNKIT_DEBUG=1`` shows the traceback.
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
    info = commands.add_parser("info", help="versions, CPU, C++ loops, CUDA and the backend auto picks per cell")
    info.add_argument("--json", action="store_true", help="print every fact as one JSON object")
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
    train = verbs.add_parser("train", help="train a sequence classifier (default: the bundled JapaneseVowels)",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--out", help="run directory (default: runs/speech-DATE-TIME)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last/ checkpoint")
    add_config_flags(train.add_argument_group("model and data"), SpeechConfig, suppress=True)
    add_config_flags(train.add_argument_group("training"), TrainConfig, suppress=True, defaults=SPEECH_TRAIN_DEFAULTS)
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate = verbs.add_parser("evaluate", help="accuracy and macro-F1 beside the majority-class baseline")
    evaluate.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint directory")
    evaluate.add_argument("--data", help="japanese_vowels, basicmotions or a NAME_TRAIN.ts file (default: the "
                                         "data the model was trained on)")
    evaluate.add_argument("--split", default="test", help="train, dev or test")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--device", default="cpu")

    from .tasks.video import VIDEO_TRAIN_DEFAULTS, VideoConfig

    video = commands.add_parser("video", help="video classification (moving digits; cnn-lstm, convlstm or the "
                                              "order-blind mean-frame): train, evaluate, predict")
    verbs = video.add_subparsers(dest="verb", metavar="VERB", required=True)
    train = verbs.add_parser("train", help="train a video classifier (default: moving digits)",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--out", help="run directory (default: runs/video-DATE-TIME)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last/ checkpoint")
    add_config_flags(train.add_argument_group("model and data"), VideoConfig, suppress=True)
    add_config_flags(train.add_argument_group("training"), TrainConfig, suppress=True, defaults=VIDEO_TRAIN_DEFAULTS)
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate = verbs.add_parser("evaluate", help="accuracy, macro-F1, per-class accuracy and the confusion matrix "
                                                 "beside chance and the majority class")
    evaluate.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint directory")
    evaluate.add_argument("--data", help="a folder of clips to score (default: the moving digits' test clips, or "
                                         "the dev clips of the folder the model was trained on)")
    evaluate.add_argument("--labels", help="the CSV of clip,label for --data (default: DATA/labels.csv)")
    evaluate.add_argument("--split", help="without --data: test (default) or dev for moving digits; dev (default) "
                                          "or train for a model trained on a folder")
    evaluate.add_argument("--reference", metavar="DIR", help="also score this run (e.g. the order-blind mean-frame) "
                                                            "on the same clips: reference_model, reference_accuracy")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--device", default="cpu")
    predict = verbs.add_parser("predict", help="the label of each clip (.npy, a folder of frames, a video file)")
    predict.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint directory")
    predict.add_argument("clips", nargs="+", metavar="CLIP", help="clips to classify")
    predict.add_argument("--device", default="cpu")

    from .tasks.asr import ASR_TRAIN_DEFAULTS, ASRConfig

    asr = commands.add_parser("asr", help="speech recognition with a bidirectional RNN and CTC: train, evaluate, "
                                          "transcribe")
    verbs = asr.add_subparsers(dest="verb", metavar="VERB", required=True)
    train = verbs.add_parser("train", help="train a recognizer (default: the bundled spoken-digit subset)",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--out", help="run directory (default: runs/asr-DATE-TIME)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last/ checkpoint")
    add_config_flags(train.add_argument_group("model and data"), ASRConfig, suppress=True)
    add_config_flags(train.add_argument_group("training"), TrainConfig, suppress=True, defaults=ASR_TRAIN_DEFAULTS)
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    def add_decoder_flags(verb: argparse.ArgumentParser) -> None:
        group = verb.add_argument_group("decoding")
        group.add_argument("--decoder", choices=["greedy", "beam"], default=None,
                           help="greedy, or CTC prefix beam search (default: beam when --lm or --words is given)")
        group.add_argument("--beam", type=int, default=16, help="beam width (default 16)")
        group.add_argument("--lm", help="a character language model's run or checkpoint directory (rnnkit lm train) "
                                        "for shallow fusion")
        group.add_argument("--lm-weight", type=float, default=0.5, help="weight of the LM's log-probability "
                                                                         "(default 0.5)")
        group.add_argument("--insertion-bonus", type=float, default=0.0,
                           help="added to the score per character, against the LM's bias to short texts (default 0)")
        group.add_argument("--words", help="a word list (whitespace-separated words; a run's transcripts.txt works): "
                                           "only its words are spelled")
        verb.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint directory")
        verb.add_argument("--device", default="cpu")

    evaluate = verbs.add_parser("evaluate", help="CER and WER beside the empty-output and most-frequent-transcript "
                                                 "baselines")
    evaluate.add_argument("--data", help="a manifest to score (default: --split of the training data)")
    evaluate.add_argument("--split", default="test", help="train, dev or test")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    add_decoder_flags(evaluate)
    transcribe = verbs.add_parser("transcribe", help="the text of audio files (WAV, FLAC, OGG)")
    transcribe.add_argument("audio", nargs="+", help="audio files")
    transcribe.add_argument("--stream", action="store_true",
                            help="read each file in chunks and print the text as it is decoded (a unidirectional "
                                 "model trained with --normalize global)")
    transcribe.add_argument("--chunk-ms", type=float, default=100.0, help="chunk length with --stream (default 100)")
    transcribe.add_argument("--alignment", help="write a PNG of the first file's spectrogram and CTC alignment here")
    add_decoder_flags(transcribe)

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

    from .tasks.translate import TRANSLATE_TRAIN_DEFAULTS, TranslateConfig

    translate = commands.add_parser("translate", help="translation with an attention decoder: train, evaluate, "
                                                      "predict")
    verbs = translate.add_subparsers(dest="verb", metavar="VERB", required=True)
    train = verbs.add_parser("train", help="train a translator (default: the bundled English-Spanish Bible verses)",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--out", help="run directory (default: runs/translate-DATE-TIME)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last/ checkpoint")
    add_config_flags(train.add_argument_group("model and data"), TranslateConfig, suppress=True)
    add_config_flags(train.add_argument_group("training"), TrainConfig, suppress=True,
                     defaults=TRANSLATE_TRAIN_DEFAULTS)
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate = verbs.add_parser("evaluate", help="BLEU and chrF (sacrebleu) beside the copy-the-source baseline")
    evaluate.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint directory")
    evaluate.add_argument("--data", help="a pair file, source<TAB>target per line (default: the training data); a "
                                         "file other than the training data is scored whole")
    evaluate.add_argument("--split", default="test", help="train, dev or test")
    evaluate.add_argument("--decoder", default="beam", choices=("greedy", "beam"), help="greedy or beam search")
    evaluate.add_argument("--beam-size", type=int, help="beams (default: the training run's)")
    evaluate.add_argument("--length-penalty", type=float, help="alpha of the length normalization (default: the "
                                                               "training run's)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--device", default="cpu")
    predict = verbs.add_parser("predict", help="the translation of a text, or of every line of a file")
    predict.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint directory")
    predict.add_argument("text", nargs="?", help="the text to translate")
    predict.add_argument("--file", help="a UTF-8 text file: one text per line (blank lines are skipped)")
    predict.add_argument("--decoder", default="beam", choices=("greedy", "beam"), help="greedy or beam search")
    predict.add_argument("--beam-size", type=int, help="beams (default: the training run's)")
    predict.add_argument("--length-penalty", type=float, help="alpha of the length normalization (default: the "
                                                              "training run's)")
    predict.add_argument("--attention-plot", metavar="PNG", help="write the attention heat map of the text (with "
                                                                 "--file: of its first line) to this PNG")
    predict.add_argument("--device", default="cpu")

    from .tasks.caption import CAPTION_TRAIN_DEFAULTS, CaptionConfig

    caption = commands.add_parser("caption", help="video captioning (moving digits): train, evaluate, predict")
    verbs = caption.add_subparsers(dest="verb", metavar="VERB", required=True)
    train = verbs.add_parser("train", help="train a captioner on generated moving-digit clips",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--out", help="run directory (default: runs/caption-DATE-TIME)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last/ checkpoint")
    add_config_flags(train.add_argument_group("model and data"), CaptionConfig, suppress=True)
    add_config_flags(train.add_argument_group("training"), TrainConfig, suppress=True, defaults=CAPTION_TRAIN_DEFAULTS)
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate = verbs.add_parser("evaluate", help="exact match and slot accuracy, then BLEU beside a constant caption's")
    evaluate.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint directory")
    evaluate.add_argument("--split", default="test", help="test (unseen glyphs) or dev (training glyphs)")
    evaluate.add_argument("--n", type=int, help="clips to score (default: the training run's test or dev size)")
    evaluate.add_argument("--decoder", default="beam", choices=("greedy", "beam"), help="greedy or beam search")
    evaluate.add_argument("--beam-size", type=int, help="beams (default: the training run's)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--device", default="cpu")
    predict = verbs.add_parser("predict", help="captions for generated test clips, or for the clips of .npy files")
    predict.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint directory")
    predict.add_argument("files", nargs="*", help=".npy files, each (N, T, 32, 32) or one clip (T, 32, 32), "
                                                  "float in [0, 1] or uint8")
    predict.add_argument("--seed", type=int, default=0, help="without files: the seed of the generated test clips")
    predict.add_argument("--n", type=int, default=5, help="without files: how many generated test clips")
    predict.add_argument("--decoder", default="beam", choices=("greedy", "beam"), help="greedy or beam search")
    predict.add_argument("--beam-size", type=int, help="beams (default: the training run's)")
    predict.add_argument("--device", default="cpu")

    from .tasks.nextframe import NEXTFRAME_TRAIN_DEFAULTS, NextFrameConfig

    nextframe = commands.add_parser("nextframe", help="next-frame prediction with a ConvLSTM (bouncing digits): "
                                                      "train, evaluate")
    verbs = nextframe.add_subparsers(dest="verb", metavar="VERB", required=True)
    train = verbs.add_parser("train", help="train a ConvLSTM encoder-forecaster on generated bouncing digits",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--out", help="run directory (default: runs/nextframe-DATE-TIME)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last/ checkpoint")
    add_config_flags(train.add_argument_group("model and data"), NextFrameConfig, suppress=True)
    add_config_flags(train.add_argument_group("training"), TrainConfig, suppress=True,
                     defaults=NEXTFRAME_TRAIN_DEFAULTS)
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate = verbs.add_parser("evaluate", help="one-step and 5-to-5 rollout MSE beside copy-last-frame and "
                                                 "mean-image baselines")
    evaluate.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint directory")
    evaluate.add_argument("--split", default="test", help="test (unseen glyphs) or dev (training glyphs)")
    evaluate.add_argument("--n", type=int, help="clips to score (default: the training run's test or dev size)")
    evaluate.add_argument("--plot", metavar="PNG", help="also write a strip of true and predicted frames here")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--device", default="cpu")

    from .tasks.lab import LabConfig
    from .tasks.lab import train_defaults as lab_train_defaults
    from .tasks.lab_data import PROBLEMS

    lab = commands.add_parser("lab", help="long-range dependency lab: adding, copy, order (generated data)")
    verbs = lab.add_subparsers(dest="verb", metavar="PROBLEM", required=True)
    for problem, text in zip(PROBLEMS, ("the adding problem (Le et al. 2015): MSE beside always-1's 0.167",
                                        "copy memory (Arjovsky et al. 2016): cross-entropy and recall accuracy "
                                        "beside the memoryless baseline",
                                        "temporal order (Hochreiter & Schmidhuber 1997, 6a): accuracy beside "
                                        "chance")):
        verb = verbs.add_parser(problem, help=f"train on {text}",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        verb.add_argument("--out", help=f"run directory (default: runs/lab-{problem}-DATE-TIME)")
        verb.add_argument("--resume", action="store_true", help="continue the run in --out from its last/ checkpoint")
        verb.add_argument("--checkpoint", help="evaluate this trained lab run (or checkpoint) instead of training")
        verb.add_argument("--json", action="store_true", help="print the test result as one JSON object")
        add_config_flags(verb.add_argument_group("model and problem"), LabConfig, suppress=True)
        add_config_flags(verb.add_argument_group("training"), TrainConfig, suppress=True,
                         defaults=lab_train_defaults(problem))
        verb.add_argument("--no-progress", action="store_true", help="no progress bar")

    from .tasks.forecast import FORECAST_TRAIN_DEFAULTS, ForecastConfig

    forecast = commands.add_parser("forecast", help="time-series forecasting: train, evaluate, predict")
    verbs = forecast.add_subparsers(dest="verb", metavar="VERB", required=True)
    # conflict_handler="resolve": the repeatable --column below replaces the plain one of add_config_flags
    train = verbs.add_parser("train", help="train a forecaster (default: the bundled air passengers)",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter, conflict_handler="resolve")
    train.add_argument("--out", help="run directory (default: runs/forecast-DATE-TIME)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last/ checkpoint")
    group = train.add_argument_group("model and data")
    add_config_flags(group, ForecastConfig, suppress=True)
    group.add_argument("--column", dest="column", action="append", default=argparse.SUPPRESS, metavar="NAME",
                       help="the column(s) to read, repeatable or comma-separated; the first is the target "
                            "(default: the file's only column besides the time column)")
    add_config_flags(train.add_argument_group("training"), TrainConfig, suppress=True,
                     defaults=FORECAST_TRAIN_DEFAULTS)
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    for verb, text in (("evaluate", "MASE, sMAPE and interval coverage on the last horizon points, beside seasonal "
                                    "naive and ETS, with the rolling-origin figures"),
                       ("predict", "the next horizon values after the end of the series, with the interval")):
        command = verbs.add_parser(verb, help=text)
        command.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint directory")
        command.add_argument("--data", help="a CSV or TSV file (default: the training run's series)")
        command.add_argument("--column", action="append", metavar="NAME",
                             help="repeatable or comma-separated (default: the training run's)")
        command.add_argument("--time-column", help="default: the training run's")
        command.add_argument("--format", help="csv or tsv (default: from the extension)")
        if verb == "predict":
            command.add_argument("--steps", type=int, help="steps ahead, at most the trained horizon (default: it)")
        command.add_argument("--json", action="store_true", help="print JSON")
        command.add_argument("--device", default="cpu")

    gradients = commands.add_parser("gradients", help="per-time-step gradient norms dL/dh_t, spectral radius, "
                                                      "clipping; a log-scale plot comparing cells",
                                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    gradients.add_argument("--cell", action="extend", nargs="+", default=None,
                           help="cells to probe, untrained (several: --cell rnn_tanh lstm gru); default lstm "
                                "unless --checkpoint is given")
    gradients.add_argument("--checkpoint", help="also probe this trained lab run (or checkpoint)")
    gradients.add_argument("--problem", default="adding", choices=PROBLEMS,
                           help="whose loss at the last step (a checkpoint's own problem overrides it)")
    gradients.add_argument("--length", type=int, default=100, help="T of the problem")
    gradients.add_argument("--hidden-size", type=int, default=LabConfig.hidden_size, help="H of untrained cells")
    gradients.add_argument("--num-layers", type=int, default=1, help="stacked layers of untrained cells")
    gradients.add_argument("--forget-bias", type=float, default=LabConfig.forget_bias,
                           help="the LSTM family's forget-gate bias at init (default: the lab's for the problem)")
    gradients.add_argument("--batch-size", type=int, default=64, help="examples the norms are averaged over")
    gradients.add_argument("--clip", type=float, default=1.0, help="the global-norm clip whose effect is reported")
    gradients.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch")
    gradients.add_argument("--plot", default="gradients.png", help="where to write the PNG ('' for none)")
    gradients.add_argument("--json", action="store_true", help="print every number as one JSON object")

    export = commands.add_parser("export", help="write a trained model to ONNX or TorchScript (dynamic batch and "
                                                "time) and check the file against PyTorch")
    export.add_argument("--checkpoint", required=True, help="a run directory or a checkpoint directory (tasks: lab, "
                                                            "classify, lm, speech, forecast)")
    export.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    export.add_argument("--out", required=True, help="the file to write, e.g. model.onnx")
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
    saved = checkpoint.load(out / "last").config if args.resume and checkpoint.recover(out / "last") else {}
    config = config_from(args, config_cls, saved)
    train_config = config_from(args, TrainConfig, saved.get("train") or train_defaults)
    if train_config.steps is None and train_config.max_minutes is None:
        train_config.max_minutes = default_minutes
    with processes(args, train_config.device) as console:
        train(config, train_config, out, resume=args.resume, progress=not args.no_progress, console=console)
    return 0


@contextlib.contextmanager
def processes(args: argparse.Namespace, device: str):
    """A training command's process group under torchrun (nothing in one process).

    Yields the console for the task: None (its own) on rank 0, a silent one on the other ranks,
    which leave once the Trainer is done, so what the task does after training runs on rank 0 only.
    """
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


def run_video(args: argparse.Namespace) -> int:
    from .tasks import video

    if args.verb == "train":
        return run_train(args, video.NAME, video.train, video.VideoConfig, video.VIDEO_TRAIN_DEFAULTS,
                         video.DEFAULT_MINUTES)
    model = video.TrainedVideo.load(args.checkpoint, args.device)
    if args.verb == "predict":
        for clip, prediction in zip(args.clips, model.predict(args.clips)):
            print(f"{prediction.label}\t{prediction.probability:.4f}\t{clip}")
        return 0
    result = model.evaluate(args.data, args.labels, args.split)
    if args.reference:
        reference = video.TrainedVideo.load(args.reference, args.device)
        if reference.labels != model.labels:
            raise ValueError(f"--reference {args.reference} knows the labels {reference.labels}, the checkpoint "
                             f"{model.labels}: they must be the same")
        other = reference.evaluate(args.data, args.labels, args.split)
        result.update(reference_model=other["model"], reference_accuracy=other["accuracy"])
    if not args.json:  # the per-class accuracies one a line; the confusion matrix only in JSON
        per_class = result.pop("per_class_accuracy")
        result = {k: v for k, v in result.items() if k not in ("confusion", "labels")}
        result.update({f"accuracy[{label}]": value for label, value in per_class.items()})
    return print_result(result, args.json)


def run_forecast(args: argparse.Namespace) -> int:
    from .tasks import forecast

    if isinstance(getattr(args, "column", None), list):  # --column a --column b,c -> "a,b,c"
        args.column = ",".join(args.column)
    if args.verb == "train":
        return run_train(args, forecast.NAME, forecast.train, forecast.ForecastConfig,
                         forecast.FORECAST_TRAIN_DEFAULTS, forecast.DEFAULT_MINUTES)
    model = forecast.TrainedForecaster.load(args.checkpoint, args.device)
    if args.verb == "predict":
        rows = model.predict(args.data, args.column, args.time_column, args.format, args.steps)
        if args.json:
            print(json.dumps(rows))
            return 0
        print("\t".join(rows[0]))  # step, time (with a time column), forecast, lower, upper
        for row in rows:
            print("\t".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
        return 0
    return print_result(model.evaluate(args.data, "test", args.column, args.time_column, args.format), args.json)


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


def run_translate(args: argparse.Namespace) -> int:
    from .data import read_text
    from .tasks import translate

    if args.verb == "train":
        return run_train(args, translate.NAME, translate.train, translate.TranslateConfig,
                         translate.TRANSLATE_TRAIN_DEFAULTS, translate.DEFAULT_MINUTES)
    model = translate.TrainedTranslator.load(args.checkpoint, args.device)
    if args.verb == "predict":
        if (args.text is None) == (args.file is None):
            raise ValueError("give either a text to translate or --file FILE, not both or neither")
        lines = [args.text] if args.text is not None else [
            line for line in read_text(args.file).split("\n") if line.strip()]
        if not lines:
            raise ValueError(f"{args.file} has no text lines to translate")
        for translation in model.predict(lines, args.decoder, args.beam_size, args.length_penalty):
            print(translation)
        if args.attention_plot:
            path = model.plot_attention(lines[0], args.attention_plot, args.decoder, args.beam_size,
                                        args.length_penalty)
            print(f"attention heat map: {path}", file=sys.stderr)
        return 0
    return print_result(model.evaluate(args.data, args.split, args.decoder, args.beam_size, args.length_penalty),
                        args.json)


def run_lab(args: argparse.Namespace) -> int:
    """``rnnkit lab PROBLEM``: train (or, with --checkpoint, evaluate) and print the test result beside its
    baseline; with --json only the JSON object goes to stdout (progress and notes go to stderr)."""
    from .console import make_console
    from .tasks import lab
    from .train import checkpoint
    from .train.trainer import TrainConfig

    if args.checkpoint:
        trained = lab.TrainedLab.load(args.checkpoint)
        if trained.problem != args.verb:
            raise ValueError(f"--checkpoint {args.checkpoint} holds a {trained.problem!r} run, not {args.verb!r}")
        result = trained.evaluate(getattr(args, "length", None), getattr(args, "test_size", None))
    else:
        if args.resume and not args.out:
            raise ValueError("--resume needs --out: the run directory to continue")
        out = Path(args.out or f"runs/lab-{args.verb}-{datetime.now():%Y%m%d-%H%M%S}")
        saved = checkpoint.load(out / "last").config if args.resume and checkpoint.recover(out / "last") else {}
        if saved and saved.get("problem") != args.verb:
            raise ValueError(f"--resume: {out} holds a {saved.get('problem')!r} run, not {args.verb!r}")
        config = config_from(args, lab.LabConfig, saved)
        train_config = config_from(args, TrainConfig, saved.get("train") or lab.train_defaults(args.verb))
        summary = None
        with processes(args, train_config.device) as rank_console:
            console = rank_console or (make_console(stderr=True) if args.json else None)
            summary = lab.train(args.verb, config, train_config, out, resume=args.resume, console=console,
                                progress=not (args.no_progress or args.json))
        if summary is None:  # a rank > 0 under torchrun: rank 0 reports
            return 0
        result = summary["test"]
    if args.json:
        print(json.dumps(result))
    elif args.checkpoint:
        print(lab.describe_result(result))
    return 0


def run_gradients(args: argparse.Namespace) -> int:
    """``rnnkit gradients``: the probe of ``rnnkit.gradients`` for each --cell (and --checkpoint), one plot."""
    from . import gradients

    cells = args.cell if args.cell is not None else ([] if args.checkpoint else ["lstm"])
    reports = gradients.run(cells, args.problem, args.length, args.hidden_size, args.num_layers, args.batch_size,
                            args.forget_bias, args.seed, args.clip, args.checkpoint)
    if args.plot:
        gradients.plot(reports, args.plot, f"gradient norms, loss at the last step of {reports[0][1]['problem']} "
                                           f"(T={args.length})")
    if args.json:
        print(json.dumps({"length": args.length, "plot": args.plot or None,
                          "probes": [{"label": label, **report} for label, report in reports]}))
        return 0
    for label, report in reports:
        print(gradients.describe(report, label))
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def run_asr(args: argparse.Namespace) -> int:
    from .tasks import asr

    if args.verb == "train":
        return run_train(args, asr.NAME, asr.train, asr.ASRConfig, asr.ASR_TRAIN_DEFAULTS, asr.DEFAULT_MINUTES)
    model = asr.TrainedASR.load(args.checkpoint, args.device)
    kind = args.decoder or ("beam" if args.lm or args.words else "greedy")
    decoder = model.decoder(kind, args.beam, args.lm, args.lm_weight, args.insertion_bonus, args.words)
    if args.verb == "evaluate":
        return print_result(model.evaluate(args.data, args.split, decoder), args.json)
    from .audio import read_audio

    for number, path in enumerate(args.audio):
        if args.stream:
            wave, rate = read_audio(path, model.config.sample_rate)
            size = max(1, round(rate * args.chunk_ms / 1000))
            print(f"{path}\t", end="", flush=True)
            for piece in model.stream(wave.split(size)):
                print(piece, end="", flush=True)
            print()
            continue
        features, log_probs = model.log_probs(path)
        print(f"{path}\t{decoder(log_probs)}")
        if number == 0 and args.alignment:
            from .plots import ctc_alignment

            print(f"alignment: {ctc_alignment(features, log_probs, model.alphabet, model.model.stack, args.alignment)}",
                  file=sys.stderr)
    return 0


def run_caption(args: argparse.Namespace) -> int:
    from .tasks import caption

    if args.verb == "train":
        return run_train(args, caption.NAME, caption.train, caption.CaptionConfig, caption.CAPTION_TRAIN_DEFAULTS,
                         caption.DEFAULT_MINUTES)
    model = caption.TrainedCaptioner.load(args.checkpoint, args.device)
    if args.verb == "predict":
        for name, text in model.predict_cli(args.files, args.seed, args.n, args.decoder, args.beam_size):
            print(f"{name}\t{text}")
        return 0
    return print_result(model.evaluate(args.split, args.n, args.decoder, args.beam_size), args.json)


def run_nextframe(args: argparse.Namespace) -> int:
    from .tasks import nextframe

    if args.verb == "train":
        return run_train(args, nextframe.NAME, nextframe.train, nextframe.NextFrameConfig,
                         nextframe.NEXTFRAME_TRAIN_DEFAULTS, nextframe.DEFAULT_MINUTES)
    model = nextframe.TrainedForecaster.load(args.checkpoint, args.device)
    result = model.evaluate(args.split, args.n)
    if args.plot:
        print(f"rollout strip: {model.plot_rollout(args.plot, args.split)}", file=sys.stderr)
    return print_result(result, args.json)


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
    if args.command == "info":
        from .info import collect, format_info

        facts = collect()
        print(json.dumps(facts, indent=2) if args.json else format_info(facts))
        return 0
    if args.command == "lm":
        return run_lm(args)
    if args.command == "classify":
        return run_classify(args)
    if args.command == "speech":
        return run_speech(args)
    if args.command == "tag":
        return run_tag(args)
    if args.command == "forecast":
        return run_forecast(args)
    if args.command == "translate":
        return run_translate(args)
    if args.command == "asr":
        return run_asr(args)
    if args.command == "video":
        return run_video(args)
    if args.command == "lab":
        return run_lab(args)
    if args.command == "caption":
        return run_caption(args)
    if args.command == "nextframe":
        return run_nextframe(args)
    if args.command == "gradients":
        return run_gradients(args)
    if args.command == "export":
        from .export import export_checkpoint

        print(export_checkpoint(args.checkpoint, args.out, args.format).describe())
        return 0
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
