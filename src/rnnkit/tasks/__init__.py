"""The applications, one module per task; each is ``rnnkit <task> <verb>`` and a Python call.

``rnnkit.load(DIR)`` reads a checkpoint's ``config.json``, finds its task here and returns
the trained model with the task's methods (``generate``, ``evaluate``, ``predict``, ...).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..train import checkpoint

# task name -> (module in rnnkit.tasks, the class whose ``load`` returns the trained model)
TRAINED = {
    "lm": ("lm", "TrainedLM"),
    "classify": ("classify", "TrainedClassifier"),
    "speech": ("speech", "TrainedSpeech"),
    "tag": ("tag", "TrainedTagger"),
    "translate": ("translate", "TrainedTranslator"),
    "forecast": ("forecast", "TrainedForecaster"),
    "lab": ("lab", "TrainedLab"),
    "asr": ("asr", "TrainedASR"),
    "caption": ("caption", "TrainedCaptioner"),
    "nextframe": ("nextframe", "TrainedForecaster"),
    "video": ("video", "TrainedVideo"),
}


def load(directory: str | Path, device: str = "cpu"):
    """The trained task model in ``directory`` (a checkpoint directory, or a run directory: best/, else last/)."""
    path = checkpoint.resolve(directory)
    task = checkpoint.load(path).config.get("task")
    if task not in TRAINED:
        raise checkpoint.CheckpointError(f"{path}: config.json names task {task!r}, which this rnnkit cannot load "
                                         f"(it knows: {', '.join(TRAINED)})")
    module, name = TRAINED[task]
    return getattr(importlib.import_module(f"{__name__}.{module}"), name).load(path, device)
