"""Video classification: ``rnnkit video train | evaluate | predict``, shown on moving digits.

Models (``--model``), all ``forward(x (T, B, C, S, S), lengths (B,)) -> logits (B, K)`` and all
built on one small per-frame CNN, :class:`FrameEncoder` (a strided stem to S/4 x S/4):

- ``cnn-lstm``: the CNN turns each frame into a vector, ``rnnkit.Recurrent`` (``--cell``, any
  registered cell) reads the vectors, a linear head reads its final state;
- ``convlstm``: the CNN's stem turns each frame into an 8 x 8 feature map (for S = 32),
  ``rnnkit.ConvRecurrent`` (``--conv-cell``) reads the maps, its final state is pooled over
  space (mean and max) for a linear head;
- ``mean-frame``: the CNN reads the average of the clip's frames: the order-blind baseline that
  every report shows beside the recurrent models.

The default data, moving digits (``rnnkit.data.moving_digits.direction_clips``): 20 frames of
32 x 32, a full-brightness digit visible for 4-7 frames moving left, right, up or down among two
dimmer bouncing distractors; the label is the direction. Reversing a clip in time gives a clip
of the opposite direction, equally likely, so an order-blind model cannot beat 50%.

- training: a stream of fresh clips, batch i being clips i*B .. i*B + B - 1 of the ``train``
  glyphs under the run's seed. Generating costs ~1.5-3 ms a clip, small beside a training step,
  and a fresh stream never overfits and needs no memory for a pool; its whole state is the
  batch index, so a resumed run reads the same clips;
- dev (picks the best checkpoint): ``dev_clips`` clips of the ``train`` glyphs under seed
  ``seed + 1_000_000``, clips the stream never shows;
- test: ``test_clips`` clips of the ``test`` glyphs (digits no training clip has) under seed 0,
  the same for every run, scored once at the end and by ``evaluate``.

Users' clips (``--data DIR``, labels in ``--labels FILE``, default ``DIR/labels.csv``, a CSV
with the columns ``clip,label``; ``clip`` is a name inside DIR):

- ``NAME.npy``: an array (T, H, W) or (T, H, W, C); uint8 is divided by 255, floats are
  taken as they are (expected in [0, 1]);
- a folder ``NAME/`` of image frames (PNG, JPEG, BMP, ...; read with Pillow), in the natural
  order of their names (``frame2`` before ``frame10``); grey images give C = 1, others RGB;
- a video file (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ``.webm``) through PyAV, the optional
  extra ``pip install 'rnnkit[video]'``, decoded to RGB.

Every clip of a folder must have the same frame size H x W and the same channels C (else an
error names two clips that differ); frames are resized (bilinear, antialiased) to the model's
``frame_size`` x ``frame_size``. Clips may differ in length T: batches are padded and the
models read each clip to its own last frame. A seeded ``dev_fraction`` of the clips is held out
to pick the best checkpoint and is what training reports; ``evaluate --data DIR2`` scores
another folder (a test set), whose labels must all have been seen in training.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor, nn

from ..cells import cells
from ..cells.conv import conv_cells
from ..conv_recurrent import ConvRecurrent
from ..data import moving_digits
from ..data.batching import hold_out
from ..extras import require
from ..recurrent import Recurrent
from ..train import checkpoint
from ..train.trainer import TrainConfig
from .base import Trained, begin, finished, fit, write_report
from .fields import ExampleFields, LayerFields, TaskConfig, check_choice, check_ints, with_defaults
from .registry import TaskSpec, Verb
from .sequence_classification import Batch, SequenceClassificationTask, confusion, predict_probs, scores

NAME = "video"
MODEL_NAMES = ("cnn-lstm", "convlstm", "mean-frame")
CLIP_BATCH = 64  # clips per forward pass of evaluate and predict (a clip is T frames of C x S x S)
DEV_SEED_OFFSET = 1_000_000  # the dev clips' seed is the run's seed plus this: clips the stream never shows
TEST_SEED = 0  # one fixed test set for every run
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
# 1000 steps: on moving digits cnn-lstm sits at chance for ~250 steps and passes 0.95 near 550; convlstm passes 0.99
# near 400 in some seeds but stays at chance for 300 steps in others (seed 1: test 0.931 after 700 steps, 0.991
# after 1000: docs/results.md), and a short cosine decays too early (400 steps: 0.90)
VIDEO_TRAIN_DEFAULTS = {"lr": 2e-3, "eval_every": 100, "checkpoint_every": 100, "warmup_steps": 50,
                        "weight_decay": 0.01, "steps": 1000}


@dataclass
@with_defaults(bidirectional=False, batch_size=32)
class VideoConfig(TaskConfig, ExampleFields, LayerFields):
    """The video classifier; defaults tuned for moving digits on 2 CPU cores."""

    unit, units = "clip", "clips"

    model: str = field(default="cnn-lstm", metadata={"help": "cnn-lstm (a --cell layer of --hidden-size), convlstm "
                                                             "(a --conv-cell layer of --hidden-channels) or "
                                                             "mean-frame (the order-blind baseline)"})
    data: str | None = field(default=None, metadata={"help": "a folder of clips (.npy, folders of frames, video "
                                                             "files) with a labels CSV; default: moving digits"})
    labels: str | None = field(default=None, metadata={"help": "the CSV of clip,label for --data (default: "
                                                               "DATA/labels.csv)"})
    conv_cell: str = field(default="convlstm", metadata={"help": "convlstm: convlstm, peephole_convlstm, convgru "
                                                                 "or cho_convgru"})
    channels: int = field(default=16, metadata={"help": "c, channels of the CNN's feature map (S/4 x S/4); small, "
                                                        "as convlstm's input convolution reads it every step"})
    features: int = field(default=128, metadata={"help": "D, the per-frame vector of cnn-lstm and mean-frame"})
    hidden_channels: int = field(default=16, metadata={"help": "convlstm: Hc, channels of the 8x8 state (small: "
                                                               "each step convolves it)"})
    kernel_size: int = field(default=3, metadata={"help": "convlstm: k of both convolutions"})
    frame_size: int = field(default=32, metadata={"help": "S: frames are resized to S x S (divisible by 8)"})
    clip_length: int = field(default=20, metadata={"help": "moving digits: T, frames per clip"})
    dev_clips: int = field(default=256, metadata={"help": "moving digits: clips that pick the best checkpoint"})
    test_clips: int = field(default=1000, metadata={"help": "moving digits: held-out clips of unseen glyphs"})
    dev_fraction: float = field(default=0.15, metadata={"help": "--data: the seeded share of clips held out as dev"})

    def validate(self) -> None:
        check_choice("model", self.model, MODEL_NAMES)
        check_choice("cell", self.cell, cells())
        check_choice("conv_cell", self.conv_cell, conv_cells())
        check_ints(self, ("channels", "features", "hidden_size", "hidden_channels", "num_layers", "batch_size",
                          "dev_clips", "test_clips"))
        if self.channels < 2:
            raise ValueError(f"channels must be >= 2 (the first layer has channels // 2), got {self.channels}")
        if not isinstance(self.kernel_size, int) or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive int, got {self.kernel_size!r}")
        if isinstance(self.frame_size, bool) or not isinstance(self.frame_size, int) or self.frame_size < 8 \
                or self.frame_size % 8:
            raise ValueError(f"frame_size must be a positive multiple of 8, got {self.frame_size!r}")
        if self.data is None and self.frame_size != moving_digits.CANVAS:
            raise ValueError(f"moving digits are {moving_digits.CANVAS}x{moving_digits.CANVAS}: frame_size must be "
                             f"{moving_digits.CANVAS} without --data, got {self.frame_size}")
        if isinstance(self.clip_length, bool) or not isinstance(self.clip_length, int) or self.clip_length < 8:
            raise ValueError(f"clip_length must be an int >= 8 (the target digit shows for up to 7 frames), "
                             f"got {self.clip_length!r}")
        if not 0 <= self.dev_fraction < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"dev_fraction and dropout must be in [0, 1), got {self.dev_fraction!r} and "
                             f"{self.dropout!r}")
        if self.labels is not None and self.data is None:
            raise ValueError("labels names a CSV for --data; give --data DIR too")


# ---------------------------------------------------------------------- the per-frame CNN


class FrameEncoder(nn.Module):
    r"""A small per-frame CNN: a strided stem to a (S/4 x S/4) feature map, then one more strided
    convolution and a linear layer to a vector. Shared by the video models (and importable by
    other tasks: captioning, next-frame prediction); its signature is stable.

    .. code-block:: text

        x (N, C, S, S)
          -> conv 3x3 stride 2, C -> c/2, ReLU        (N, c/2, S/2, S/2)
          -> conv 3x3 stride 2, c/2 -> c, ReLU        (N, c, S/4, S/4)      = stem(x), "feature map"
          -> conv 3x3 stride 2, c -> c, ReLU          (N, c, S/8, S/8)
          -> flatten, Linear c (S/8)^2 -> D, ReLU     (N, D)                = forward(x)

    The vector is a flatten, not a global pooling: it keeps *where* things are in the frame,
    which motion tasks need. S must be divisible by 8 (32 -> 16 -> 8 -> 4).

    Args:
        in_channels: C, channels of a frame (1 for grey moving digits).
        channels: c, channels of the stem's output (the feature map); the first layer has c // 2.
        out_features: D, the size of the vector ``forward`` returns.
        frame_size: S, frames are S x S (32 for moving digits).

    Shapes:
        forward(x (N, C, S, S)) -> (N, D)
        stem(x (N, C, S, S)) -> (N, c, S/4, S/4)   (8 x 8 for S = 32)

    Example::

        >>> enc = FrameEncoder(in_channels=1, channels=32, out_features=128)
        >>> enc(torch.rand(40, 1, 32, 32)).shape, enc.stem(torch.rand(40, 1, 32, 32)).shape
        (torch.Size([40, 128]), torch.Size([40, 32, 8, 8]))
    """

    def __init__(self, in_channels: int = 1, channels: int = 32, out_features: int = 128,
                 frame_size: int = 32) -> None:
        super().__init__()
        for name, value, least in (("in_channels", in_channels, 1), ("channels", channels, 2),
                                   ("out_features", out_features, 1), ("frame_size", frame_size, 8)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
        if frame_size % 8:
            raise ValueError(f"frame_size must be divisible by 8 (three stride-2 convolutions), got {frame_size}")
        self.in_channels, self.channels, self.out_features, self.frame_size = (in_channels, channels, out_features,
                                                                              frame_size)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels // 2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.down = nn.Sequential(nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU())
        self.proj = nn.Sequential(nn.Flatten(), nn.Linear(channels * (frame_size // 8) ** 2, out_features), nn.ReLU())

    def check(self, x: Tensor) -> None:
        expected = (self.in_channels, self.frame_size, self.frame_size)
        if not isinstance(x, Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != expected:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"frames must be (N, {', '.join(map(str, expected))}), got {got}")

    def forward(self, x: Tensor) -> Tensor:
        self.check(x)
        return self.proj(self.down(self.stem(x)))  # (N, D)


# ---------------------------------------------------------------------- the three models


class VideoClassifier(nn.Module):
    """The video models' common interface: ``forward(x (T, B, C, S, S), lengths (B,)) -> logits (B, K)``.

    ``x`` is zero past each clip's length; frames are floats in [0, 1].
    """

    head: nn.Linear


class CNNLSTM(VideoClassifier):
    """Per-frame CNN -> vector -> ``rnnkit.Recurrent`` -> the last layer's final state -> Linear.

    x (T, B, C, S, S) -> FrameEncoder on all T*B frames (T*B, D) -> (T, B, D) -> Recurrent (cell, H)
    -> h of the last layer at each clip's last frame (B, D'*H) -> Linear -> (B, K)
    """

    def __init__(self, config: VideoConfig, in_channels: int, num_labels: int) -> None:
        super().__init__()
        self.encoder = FrameEncoder(in_channels, config.channels, config.features, config.frame_size)
        self.rnn = Recurrent(config.cell, config.features, config.hidden_size, config.num_layers,
                             dropout=config.dropout, bidirectional=config.bidirectional)
        self.head = nn.Linear(config.hidden_size * self.rnn.num_directions, num_labels)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        T, B = x.shape[:2]
        v = self.encoder(x.flatten(0, 1)).view(T, B, -1)  # (T, B, D)
        _, state = self.rnn(v, lengths=lengths)
        h = state.h if isinstance(state, tuple) else state  # (L*D', B, H), layer-major as torch
        D = self.rnn.num_directions
        return self.head(h[-D:].transpose(0, 1).reshape(B, -1))  # (B, K)


class ConvLSTMClassifier(VideoClassifier):
    """Strided conv stem to (S/4 x S/4) -> ``rnnkit.ConvRecurrent`` -> final state pooled over space -> Linear.

    x (T, B, C, S, S) -> FrameEncoder.stem on all frames (T, B, c, S/4, S/4) -> ConvRecurrent (conv_cell, Hc,
    kernel k) -> h of the last layer at each clip's last frame (B, D'*Hc, S/4, S/4) -> mean and max over
    space, concatenated (B, 2*D'*Hc) -> Linear -> (B, K). Max pooling lets a motion detector fire anywhere.
    """

    def __init__(self, config: VideoConfig, in_channels: int, num_labels: int) -> None:
        super().__init__()
        self.encoder = FrameEncoder(in_channels, config.channels, config.features, config.frame_size)
        del self.encoder.down, self.encoder.proj  # only the stem is used (DDP refuses unused parameters)
        self.rnn = ConvRecurrent(config.conv_cell, config.channels, config.hidden_channels, config.kernel_size,
                                 config.num_layers, bidirectional=config.bidirectional, dropout=config.dropout)
        self.head = nn.Linear(2 * config.hidden_channels * self.rnn.num_directions, num_labels)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        T, B = x.shape[:2]
        self.encoder.check(x[0])
        m = self.encoder.stem(x.flatten(0, 1))  # (T*B, c, S/4, S/4)
        _, state = self.rnn(m.view(T, B, *m.shape[1:]), lengths=lengths)
        h = state.h if isinstance(state, tuple) else state  # (L*D', B, Hc, S/4, S/4)
        D = self.rnn.num_directions
        h = h[-D:].transpose(0, 1).flatten(1, 2)  # (B, D'*Hc, S/4, S/4)
        return self.head(torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1))  # (B, K)


class MeanFrame(VideoClassifier):
    """The order-blind baseline: FrameEncoder over the mean of each clip's valid frames -> Linear.

    x (T, B, C, S, S) -> mean over t < length (B, C, S, S) -> FrameEncoder (B, D) -> Linear -> (B, K).
    It sees the multiset of frames, never their order: on moving digits, where reversing a clip
    gives the opposite direction, it cannot beat 50%.
    """

    def __init__(self, config: VideoConfig, in_channels: int, num_labels: int) -> None:
        super().__init__()
        self.encoder = FrameEncoder(in_channels, config.channels, config.features, config.frame_size)
        self.head = nn.Linear(config.features, num_labels)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        mean = x.sum(0) / lengths.to(x.device, x.dtype).view(-1, 1, 1, 1)  # (B, C, S, S); padding is zero
        return self.head(self.encoder(mean))  # (B, K)


MODELS = {"cnn-lstm": CNNLSTM, "convlstm": ConvLSTMClassifier, "mean-frame": MeanFrame}


def build_model(config: VideoConfig, in_channels: int, num_labels: int) -> VideoClassifier:
    return MODELS[config.model](config, in_channels, num_labels)


# ---------------------------------------------------------------------- data


class Clips(NamedTuple):
    """Labelled clips: each (T_i, C, S, S) float32, frames resized to S x S."""

    clips: list[Tensor]  # each (T_i, C, S, S)
    labels: list[str]
    names: list[str]  # where each clip came from, for messages
    source: str


def _natural_key(name: str) -> list:
    """``frame2`` before ``frame10``: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _read_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as file:  # numpy says "EOFError" for an empty file and "pickled data" for any other
        magic = file.read(6)
    if not magic:
        raise ValueError(f"{path} is empty (0 bytes); expected a .npy array (T, H, W) or (T, H, W, C)")
    if magic != b"\x93NUMPY":
        raise ValueError(f"{path} is not a .npy file: it does not start with the .npy magic bytes \\x93NUMPY "
                         f"(it starts with {magic!r}); save clips with numpy.save")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path} is not a readable .npy array ({error})") from None
    if array.ndim not in (3, 4):
        raise ValueError(f"{path}: a clip must be (T, H, W) or (T, H, W, C), got an array of shape {array.shape}")
    return array if array.ndim == 4 else array[..., None]


def _read_frames(folder: Path) -> np.ndarray:
    image = require("PIL.Image", "reading a folder of image frames", package="pillow", extra="video")
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: _natural_key(p.name))
    if not files:
        raise ValueError(f"{folder} is a clip folder with no image frames (expected files ending in "
                         f"{', '.join(IMAGE_SUFFIXES)})")
    frames = []
    for file in files:
        try:
            with image.open(file) as img:
                grey = img.mode in ("1", "L", "LA", "I", "I;16", "F")
                frame = np.asarray(img.convert("L" if grey else "RGB"))
        except OSError as error:
            raise ValueError(f"{file} is not a readable image ({error})") from None
        frame = frame[..., None] if frame.ndim == 2 else frame  # (H, W, C)
        if frames and frame.shape != frames[0].shape:
            (h, w, c), (h0, w0, c0) = frame.shape, frames[0].shape
            raise ValueError(f"{folder}: frame {file.name} is {w}x{h} with {c} channel(s), frame {files[0].name} is "
                             f"{w0}x{h0} with {c0}; a clip's frames must share one size and one mode (grey or "
                             "colour)")
        frames.append(frame)
    return np.stack(frames)  # (T, H, W, C) uint8


def _read_video(path: Path) -> np.ndarray:
    av = require("av", f"reading the video file {path.name}", package="av", extra="video")
    try:
        with av.open(str(path)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except Exception as error:  # PyAV raises its own error types (av.error.*)
        raise ValueError(f"{path} could not be decoded as a video ({type(error).__name__}: {error})") from None
    if not frames:
        raise ValueError(f"{path} has no video frames")
    return np.stack(frames)  # (T, H, W, 3) uint8


def read_clip(path: str | Path) -> Tensor:
    """One clip as (T, C, H, W) float32: a ``.npy`` array, a folder of image frames or a video file
    (see the module notes); uint8 is divided by 255."""
    path = Path(path)
    if path.is_dir():
        array = _read_frames(path)
    elif not path.exists():
        raise FileNotFoundError(f"no such clip: {path}")
    elif path.suffix.lower() == ".npy":
        array = _read_npy(path)
    elif path.suffix.lower() in VIDEO_SUFFIXES:
        array = _read_video(path)
    else:
        raise ValueError(f"{path}: a clip must be a .npy array, a folder of image frames or a video file "
                         f"({', '.join(VIDEO_SUFFIXES)}), got a {path.suffix or 'suffix-less'} file")
    if array.shape[0] == 0 or 0 in array.shape[1:3]:
        raise ValueError(f"{path} is an empty clip, shape {array.shape}")
    if array.dtype == np.uint8:
        x = torch.from_numpy(array.astype(np.float32) / 255)
    elif np.issubdtype(array.dtype, np.floating):
        x = torch.from_numpy(array.astype(np.float32))
        if not torch.isfinite(x).all():
            raise ValueError(f"{path} holds NaN or infinite values")
    else:
        raise ValueError(f"{path}: expected uint8 (0-255) or float (0-1) values, got dtype {array.dtype}")
    return x.permute(0, 3, 1, 2).contiguous()  # (T, C, H, W)


def resize_frames(x: Tensor, frame_size: int) -> Tensor:
    """(T, C, H, W) -> (T, C, S, S), bilinear with antialiasing; unchanged when already S x S."""
    if tuple(x.shape[2:]) == (frame_size, frame_size):
        return x
    return F.interpolate(x, size=(frame_size, frame_size), mode="bilinear", align_corners=False, antialias=True)


def check_same_frames(clips: Sequence[Tensor], names: Sequence[str], channels: int | None = None) -> None:
    """Every clip has the frame size (H, W) and channels C of the first (and ``channels``, if given)."""
    first = clips[0].shape[1:]
    for clip, name in zip(clips, names):
        if clip.shape[2:] != first[1:]:
            raise ValueError(f"clips of different frame sizes: {name} has {clip.shape[3]}x{clip.shape[2]} frames, "
                             f"{names[0]} has {first[2]}x{first[1]}; resize them to one size first")
        if clip.shape[1] != first[0]:
            raise ValueError(f"clips with different channels: {name} has {clip.shape[1]}, {names[0]} has {first[0]}")
    if channels is not None and first[0] != channels:
        raise ValueError(f"{names[0]} has {first[0]} channels per frame, the model was trained on {channels}")


def read_labels(path: Path, folder: Path) -> tuple[list[str], list[str]]:
    """The (clip, label) rows of a labels CSV, each clip checked to exist in ``folder``."""
    if not path.is_file():
        raise FileNotFoundError(f"no labels file {path}: give --labels FILE, a CSV with the columns clip,label "
                                f"(or put labels.csv in {folder})")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte at offset {e.start}); re-save it as UTF-8") from None
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in reader.fieldnames or []]
    if "clip" not in columns or "label" not in columns:
        raise ValueError(f"{path} must have the columns clip and label, found {columns or 'no header'}")
    reader.fieldnames = columns
    names, labels = [], []
    for number, row in enumerate(reader, 2):
        if None in row:  # csv's restkey: the row has more fields than the header
            raise ValueError(f"{path} line {number} has more fields than the header ({', '.join(columns)}): "
                             f"{row[None]!r} left over; quote a field that holds a comma")
        clip, label = (row.get("clip") or "").strip(), (row.get("label") or "").strip()
        if not clip and not label:
            continue
        if not clip or not label:
            raise ValueError(f"{path} line {number}: empty clip or label")
        if not (folder / clip).exists():
            raise FileNotFoundError(f"{path} line {number} names clip {clip!r}, which is not in {folder}")
        names.append(clip)
        labels.append(label)
    if not names:
        raise ValueError(f"{path} lists no clips (expected rows of clip,label after the header)")
    return names, labels


def load_folder(data: str | Path, labels: str | Path | None, frame_size: int, channels: int | None = None) -> Clips:
    """The clips of a user's folder with their labels (module notes), resized to ``frame_size``."""
    folder = Path(data)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data must be a folder of clips, {folder} is not one")
    entries = [p for p in folder.iterdir() if p.is_dir() or p.suffix.lower() in (".npy", *VIDEO_SUFFIXES)]
    if not entries:
        raise ValueError(f"{folder} is empty: expected clips as .npy arrays, folders of image frames or video files "
                         "(with a labels CSV)")
    names, label_list = read_labels(Path(labels) if labels else folder / "labels.csv", folder)
    clips = [read_clip(folder / name) for name in names]
    check_same_frames(clips, names, channels)
    return Clips([resize_frames(c, frame_size) for c in clips], label_list, names, str(folder))


def digit_clips(n: int, seed: int, split: str, length: int, start: int = 0) -> tuple[Tensor, Tensor]:
    """Moving-digit direction clips as (T, n, 1, 32, 32) and their labels (n,)."""
    x, y = moving_digits.direction_clips(n, seed, split, length, start=start)  # (n, T, 32, 32)
    return x.transpose(0, 1).unsqueeze(2), y


class FreshClipStream:
    """Batch i = moving-digit clips i*B .. i*B + B - 1 of the train glyphs: endless, never repeated,
    resumable from i alone.

    Batch i + 1 is drawn in a background thread while step i trains (drawing is Python-bound and
    torch's kernels release the GIL, so on 2 cores it is nearly free); a clip depends only on its
    index, so the batches are the same with or without the thread.
    """

    def __init__(self, batch_size: int, seed: int, length: int, device: torch.device) -> None:
        self.batch_size, self.seed, self.length, self.device = batch_size, seed, length, device
        self.index = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnnkit-video-clips")
        self._ahead: tuple[int, Future] | None = None

    def _draw(self, index: int) -> tuple[Tensor, Tensor]:
        return digit_clips(self.batch_size, self.seed, "train", self.length, start=index * self.batch_size)

    def next(self) -> Batch:
        if self._ahead is not None and self._ahead[0] == self.index:
            x, y = self._ahead[1].result()
        else:
            x, y = self._draw(self.index)
        self.index += 1
        self._ahead = (self.index, self._pool.submit(self._draw, self.index))
        return Batch(x.to(self.device), torch.full((self.batch_size,), self.length, device=self.device),
                     y.to(self.device))

    def state(self) -> tuple[dict, dict[str, Tensor]]:
        return {"index": self.index, "seed": self.seed}, {}

    def load_state(self, meta: dict, tensors: dict[str, Tensor]) -> None:
        self.index, self.seed = int(meta["index"]), int(meta["seed"])
        self._ahead = None


def load_splits(config: VideoConfig, seed: int) -> dict[str, Clips]:
    """A user's folder as train and dev (a seeded ``dev_fraction``); the moving digits' dev and test sets
    (their training clips come from :class:`FreshClipStream`, so ``train`` is absent)."""
    if config.data is None:
        out = {}
        for split, n, clip_seed, glyphs in (("dev", config.dev_clips, seed + DEV_SEED_OFFSET, "train"),
                                            ("test", config.test_clips, TEST_SEED, "test")):
            x, y = moving_digits.direction_clips(n, clip_seed, glyphs, config.clip_length)  # (n, T, 32, 32)
            out[split] = Clips(list(x.unsqueeze(2)), [moving_digits.DIRECTIONS[i] for i in y.tolist()],
                               [f"{split} clip {i}" for i in range(n)], f"moving digits ({split})")
        return out
    clips = load_folder(config.data, config.labels, config.frame_size)
    kept, held = hold_out(len(clips.clips), config.dev_fraction, seed, f"clip(s) of {config.data}")
    pick = lambda indices: Clips(*([values[i] for i in indices] for values in clips[:3]), clips.source)  # noqa: E731
    return {"train": pick(kept), "dev": pick(held)}


def check_labels(clips: Clips, known: Sequence[str]) -> None:
    unseen = sorted(set(clips.labels) - set(known))
    if unseen:
        first = clips.labels.index(unseen[0])
        raise ValueError(f"{clips.source} has label(s) never seen in training: {', '.join(map(repr, unseen[:5]))} "
                         f"(first at clip {clips.names[first]}); the model knows {', '.join(known)}")


def report(targets: Sequence[int], probs: Tensor, labels: Sequence[str], majority: int) -> dict:
    """accuracy, macro_f1, majority_accuracy, n, chance_accuracy (1/K), per-class accuracy and the confusion
    matrix (rows true, columns predicted, in the order of ``labels``)."""
    matrix = confusion(torch.tensor(list(targets)), probs.argmax(-1), len(labels))
    rows = matrix.sum(1)
    per_class = {label: (int(matrix[i, i]) / int(rows[i]) if rows[i] else None) for i, label in enumerate(labels)}
    return {**scores(matrix, majority), "chance_accuracy": 1 / len(labels), "per_class_accuracy": per_class,
            "labels": list(labels), "confusion": matrix.tolist()}


# ---------------------------------------------------------------------- training


class VideoTask(SequenceClassificationTask):
    """The Trainer's view of a video classifier: sequences of frames."""

    name = NAME
    predict_batch_size = 64  # clips are large

    def __init__(self, config: VideoConfig, splits: dict[str, Clips], labels: list[str], seed: int,
                 device: torch.device) -> None:
        self.config, self.splits = config, splits
        self.set_data({s: c.clips for s, c in splits.items()}, {s: c.labels for s, c in splits.items()}, labels)
        if config.data is None:
            self.in_channels = 1
            self.majority = 0  # the stream's directions are uniform: "left" by convention
            self.stream = FreshClipStream(config.batch_size, seed, config.clip_length, device)
        else:
            self.in_channels = int(splits["train"].clips[0].shape[1])
            self.stream = self.shuffled_stream(config.batch_size, seed, device)
        self.model = build_model(config, self.in_channels, len(labels)).to(device)

    def score(self, split: str) -> dict:
        """``report``'s metrics of the split: beside the scores, chance, per-class accuracy and the confusion."""
        return report(self.data[split][1], self.predict(split), self.labels, self.majority)

    def evaluate(self) -> dict:
        result = self.score(self.eval_split)
        return {k: v for k, v in result.items() if isinstance(v, (int, float))}  # numbers for metrics.jsonl

    def describe(self) -> tuple[dict, None]:
        # label_names: config.json's "labels" is the config's labels-CSV field
        return {**self.config.model_settings(), "label_names": self.labels,
                "majority": self.labels[self.majority], "in_channels": self.in_channels}, None


def describe_model(config: VideoConfig) -> str:
    if config.model == "cnn-lstm":
        return (f"cnn-lstm: CNN {config.channels}c -> {config.features} -> {'bi' if config.bidirectional else ''}"
                f"{config.cell} {config.num_layers}x{config.hidden_size}")
    if config.model == "convlstm":
        side = config.frame_size // 4
        return (f"convlstm: stem {config.channels}c {side}x{side} -> {'bi' if config.bidirectional else ''}"
                f"{config.conv_cell} {config.num_layers}x{config.hidden_channels}c k{config.kernel_size}")
    return f"mean-frame (order-blind): CNN {config.channels}c -> {config.features} over the mean frame"


def train(config: VideoConfig, train_config: TrainConfig, out: str | Path, resume: bool = False,
          console: Console | None = None, progress: bool = True) -> dict:
    """Train on ``config.data`` (default moving digits) into the run directory ``out``; returns the Trainer's
    summary plus ``test``: the best checkpoint (chosen on dev) scored on the moving digits' test clips, or on
    the dev clips of a user's folder."""
    config.validate()
    console, saved = begin(train_config, out, resume, console)
    splits = load_splits(config, train_config.seed)
    if config.data is None:
        labels = list(moving_digits.DIRECTIONS)
    else:
        labels = sorted(set(splits["train"].labels), key=lambda y: (len(y), y))
        if saved is not None:
            labels = saved.config.get("label_names", labels)
        check_labels(splits["dev"], labels)
    task = VideoTask(config, splits, labels, train_config.seed, torch.device(train_config.device))
    if config.data is None:
        data = (f"moving digits, fresh clips of {config.clip_length} frames ({config.batch_size} a step), "
                f"{len(splits['dev'].clips):,} dev, {len(splits['test'].clips):,} test clips of unseen glyphs")
    else:
        data = f"{len(splits['train'].clips):,} train and {len(splits['dev'].clips):,} dev clips of {config.data}"
    summary = fit(task, train_config, out, resume, console, progress, lambda params: (
        f"video: {describe_model(config)}, {params:,} parameters, {len(labels)} labels; {data}"))
    split = "test" if config.data is None else task.eval_split
    result = task.score(split)
    write_report(out, NAME, split, {"model": config.model, **result}, file="test.json")
    console.print(f"{split}: accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f} (chance "
                  f"{result['chance_accuracy']:.4f}; majority class {result['majority_accuracy']:.4f}), n "
                  f"{result['n']}, {config.model} {finished(summary, out)}", highlight=False)
    if config.data is None and config.model != "mean-frame":
        console.print("the order-blind reference: rnnkit video train --model mean-frame (at most 0.5 on moving "
                      "digits: a reversed clip has the opposite label)", highlight=False)
    return {**summary, "test": {"split": split, **result}}


# ---------------------------------------------------------------------- a trained model


class Prediction(NamedTuple):
    label: str
    probability: float


@dataclass(eq=False, repr=False)
class TrainedVideo(Trained):
    """A trained video classifier loaded from a checkpoint: ``predict`` and ``evaluate``."""

    task, config_class, what, needs = NAME, VideoConfig, "a video model", ("label_names", "in_channels")

    labels: list[str]  # the training labels, in logit order
    majority: str  # the most frequent training label: the baseline's prediction
    in_channels: int  # C of the frames it reads
    seed: int = 0  # the training seed: the dev clips (and a folder's dev split) depend on it

    @classmethod
    def read(cls, ckpt: checkpoint.Checkpoint, config: VideoConfig, path: Path) -> tuple[VideoClassifier, dict]:
        labels, in_channels = list(ckpt.config["label_names"]), int(ckpt.config["in_channels"])
        return build_model(config, in_channels, len(labels)), {
            "labels": labels, "majority": ckpt.config.get("majority", labels[0]), "in_channels": in_channels,
            "seed": int((ckpt.config.get("train") or {}).get("seed", 0))}

    def _prepare(self, clips: Sequence[Tensor], names: Sequence[str]) -> list[Tensor]:
        clips = list(clips)
        if not clips:
            raise ValueError("no clips to predict")
        for clip, name in zip(clips, names):
            if not isinstance(clip, Tensor) or clip.dim() != 4:
                got = tuple(clip.shape) if isinstance(clip, Tensor) else type(clip).__name__
                raise ValueError(f"clip {name} must be a (T, C, H, W) tensor, got {got}")
        for clip, name in zip(clips, names):  # each clip is resized on its own: sizes may differ here
            if clip.shape[1] != self.in_channels:
                raise ValueError(f"clip {name} has {clip.shape[1]} channels per frame, the model was trained on "
                                 f"{self.in_channels}")
            if 0 in clip.shape:
                raise ValueError(f"clip {name} is empty, shape {tuple(clip.shape)}; expected at least 1 frame of "
                                 "at least 1x1")
            if clip.is_floating_point() and not torch.isfinite(clip).all():
                raise ValueError(f"clip {name} holds NaN or infinite values")
        return [resize_frames(c.float(), self.config.frame_size) for c in clips]

    def predict(self, clips: Sequence[Tensor | str | Path]) -> list[Prediction]:
        """The most likely label of each clip and its probability; a clip is a (T, C, H, W) tensor in [0, 1]
        or a path (.npy, a folder of frames, a video file)."""
        names = [str(c) if not isinstance(c, Tensor) else f"#{i}" for i, c in enumerate(clips)]
        tensors = [c if isinstance(c, Tensor) else read_clip(c) for c in clips]
        probs = predict_probs(self.model, self._prepare(tensors, names), CLIP_BATCH)
        best = probs.max(-1)
        return [Prediction(self.labels[int(i)], float(p)) for p, i in zip(best.values, best.indices)]

    def evaluate(self, data: str | None = None, split: str | None = None, *, labels: str | None = None) -> dict:
        """accuracy, macro_f1, majority_accuracy, chance_accuracy, per-class accuracy and the confusion matrix.

        Without ``data``: for a model trained on moving digits their ``test`` clips (``split`` test, the
        default, or dev); for a model trained on a folder that folder's ``dev`` clips (``split`` dev, the
        default, or train). With ``data``: every clip of that folder (``labels``: its CSV), split ``data``.
        """
        if data is not None:
            if split is not None:
                raise ValueError(f"split names a part of the training data; with data every clip of {data} is "
                                 f"scored, got split {split!r} too")
            clips = load_folder(data, labels, self.config.frame_size, self.in_channels)
            split = "data"
        else:
            allowed = ("dev", "test") if self.config.data is None else ("train", "dev")
            split = split or allowed[-1]
            if split not in allowed:
                what = ("moving-digit models train on a stream of fresh clips" if self.config.data is None else
                        f"a model trained on {self.config.data} has no test split: pass your test folder as data")
                raise ValueError(f"split must be {' or '.join(allowed)}: {what}; got {split!r}")
            splits = load_splits(self.config, self.seed)
            clips = splits[split]
            if not clips.clips:
                raise ValueError(f"{self.config.data} has no {split} clips (dev_fraction {self.config.dev_fraction}): "
                                 "evaluate split train, or pass a folder of test clips as data")
            if self.config.data is not None:
                check_same_frames(clips.clips, clips.names, self.in_channels)
        check_labels(clips, self.labels)
        index = {label: i for i, label in enumerate(self.labels)}
        probs = predict_probs(self.model, clips.clips, CLIP_BATCH)
        result = report([index[y] for y in clips.labels], probs, self.labels, index[self.majority])
        return {"task": NAME, "split": split, "model": self.config.model, **result}


# ---------------------------------------------------------------------- the task's SPEC (rnnkit.tasks.registry)

@dataclass
class EvaluateArgs:
    data: str | None = field(default=None, metadata={"help": "a folder of clips to score (default: the moving "
                                                             "digits' test clips, or the dev clips of the folder the "
                                                             "model was trained on)"})
    labels: str | None = field(default=None, metadata={"help": "the CSV of clip,label for --data (default: "
                                                               "DATA/labels.csv)"})
    split: str | None = field(default=None, metadata={"help": "without --data: test (default) or dev for moving "
                                                              "digits; dev (default) or train for a model trained on "
                                                              "a folder"})
    reference: str | None = field(default=None, metadata={"help": "also score this run (e.g. the order-blind "
                                                                  "mean-frame) on the same clips: reference_model, "
                                                                  "reference_accuracy", "metavar": "DIR"})


@dataclass
class PredictArgs:
    clips: list | None = field(default=None, metadata={"help": "clips to classify", "nargs": "+",
                                                       "metavar": "CLIP"})


def run_evaluate(trained: TrainedVideo, args: EvaluateArgs, as_json: bool) -> dict:
    """``rnnkit video evaluate``: ``evaluate``, beside the --reference run's accuracy; the per-class accuracies one
    a line, the confusion matrix only in JSON."""
    result = trained.evaluate(args.data, args.split, labels=args.labels)
    if args.reference:
        reference = TrainedVideo.load(args.reference, str(next(trained.model.parameters()).device))
        if reference.labels != trained.labels:
            raise ValueError(f"--reference {args.reference} knows the labels {reference.labels}, the checkpoint "
                             f"{trained.labels}: they must be the same")
        other = reference.evaluate(args.data, args.split, labels=args.labels)
        result.update(reference_model=other["model"], reference_accuracy=other["accuracy"])
    if not as_json:
        per_class = result.pop("per_class_accuracy")
        result = {k: v for k, v in result.items() if k not in ("confusion", "labels")}
        result.update({f"accuracy[{label}]": value for label, value in per_class.items()})
    return result


def run_predict(trained: TrainedVideo, args: PredictArgs, as_json: bool) -> None:
    """``rnnkit video predict``: label, probability and clip, one line per clip."""
    for clip, prediction in zip(args.clips, trained.predict(args.clips)):
        print(f"{prediction.label}\t{prediction.probability:.4f}\t{clip}")


SPEC = TaskSpec(NAME, "video classification (moving digits; cnn-lstm, convlstm or the order-blind mean-frame): "
                "train, evaluate, predict", VideoConfig, train, TrainedVideo.load,
                train_help="train a video classifier (default: moving digits)", train_defaults=VIDEO_TRAIN_DEFAULTS,
                export="a clip is read by a CNN and a ConvLSTM over frames of a size fixed at training; export its "
                       "Recurrent layer with rnnkit.export.export_layer",
                verbs={"evaluate": Verb("accuracy, macro-F1, per-class accuracy and the confusion matrix beside "
                                        "chance and the majority class", EvaluateArgs, run_evaluate),
                       "predict": Verb("the label of each clip (.npy, a folder of frames, a video file)", PredictArgs,
                                       run_predict, json=None)})
