"""Reading audio files: soundfile (libsndfile) for WAV, FLAC and OGG, to mono float32 samples."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import torch
from torch import Tensor

from ..extras import require
from .resample import resample


class AudioError(ValueError):
    """An audio file that cannot be used: missing, unreadable, empty; the message names the file."""


def read_audio(path: str | Path | BinaryIO, sample_rate: int | None = None) -> tuple[Tensor, int]:
    """The samples of ``path`` (a file name, or a binary file object) as mono float32 in [-1, 1], shape
    (N,), and their rate in Hz.

    Several channels are averaged. With ``sample_rate`` the samples are resampled to it and that
    rate is returned.
    """
    soundfile = require("soundfile", "reading audio")
    if isinstance(path, (str, Path)):
        path = Path(path)
        if not path.is_file():
            raise AudioError(f"{path}: no such audio file")
        source = str(path)
    else:
        source = path
        path = getattr(path, "name", "<audio bytes>")
    try:
        data, rate = soundfile.read(source, dtype="float32", always_2d=True)  # (N, C)
    except (RuntimeError, soundfile.LibsndfileError) as e:
        raise AudioError(f"{path}: not a readable audio file ({e})") from e
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the audio file has no samples")
    wave = torch.from_numpy(data).mean(dim=1)  # (N,)
    if sample_rate is not None and sample_rate != rate:
        try:
            wave = resample(wave, int(rate), sample_rate)
        except ValueError as e:
            raise AudioError(f"{path}: {e}") from e
        rate = sample_rate
    return wave, int(rate)
