"""The applications, one module per task; each is ``rnnkit <task> <verb>`` and a Python call.

``rnnkit.load(DIR)`` reads a checkpoint's ``config.json``, finds its task here and returns
the trained model with the task's methods (``generate``, ``evaluate``, ``predict``, ...).
"""

from __future__ import annotations

from pathlib import Path

from ..train import checkpoint


def load(directory: str | Path, device: str = "cpu"):
    """The trained task model in ``directory`` (a checkpoint directory, or a run directory: best/, else last/)."""
    path = checkpoint.resolve(directory)
    task = checkpoint.load(path).config.get("task")
    if task == "lm":
        from .lm import TrainedLM

        return TrainedLM.load(path, device)
    if task == "classify":
        from .classify import TrainedClassifier

        return TrainedClassifier.load(path, device)
    if task == "speech":
        from .speech import TrainedSpeech

        return TrainedSpeech.load(path, device)
    if task == "tag":
        from .tag import TrainedTagger

        return TrainedTagger.load(path, device)
    raise checkpoint.CheckpointError(f"{path}: config.json names task {task!r}, which this rnnkit cannot load "
                                     "(it knows: lm, classify, speech, tag)")
