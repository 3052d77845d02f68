r"""Moving digits: deterministic 32x32 frame sequences of handwritten digits, for `rnnkit video`.

    >>> from rnnkit.data import moving_digits as md
    >>> x, y = md.direction_clips(64, seed=0, split="train")      # (64, 20, 32, 32), (64,) in 0..3
    >>> x, captions, slots = md.caption_clips(64, seed=0, split="train")
    >>> captions[0]
    'the digit 6 moves left then the digit 9 moves left'
    >>> x = md.bouncing_clips(64, seed=0, split="train")          # (64, 20, 32, 32)

Glyphs: the 1,797 handwritten digits (8x8, 17 grey levels) that scikit-learn ships in its
wheel (``sklearn/datasets/data/digits.csv.gz``, the UCI "Optical Recognition of Handwritten
Digits" test set; read here without importing scikit-learn, and never copied into rnnkit).
Digit i of that file belongs to the ``train`` split when i is even and to ``test`` when i is
odd (899 and 898 glyphs, every digit in both), so the test clips show glyphs no training
clip has. A glyph is scaled to [0, 1] (value / 16), upsampled to :data:`GLYPH_SIZE` x
:data:`GLYPH_SIZE` with bilinear interpolation (``F.interpolate``, ``align_corners=False``)
and rounded to a grey level k/255; a dimmed digit's levels are rounded again, so every
pixel of a clip is some k/255 and the golden hashes of the tests do not depend on float
rounding.

Canvas and positions: frames are :data:`CANVAS` x :data:`CANVAS`; a glyph sits with its
top-left corner at integer (row, column) in [0, R], R = CANVAS - GLYPH_SIZE = 20, so it is
always wholly inside. Digits overlap by taking the pixelwise maximum. "left"/"right" move
along columns (decreasing/increasing), "up"/"down" along rows (decreasing/increasing), as
the frame is displayed with row 0 at the top.

Determinism: clip k of (task, split, seed) is drawn from its own ``torch.Generator``,
seeded from sha256 of ``"{task}:{split}:{seed}:{k}"``; nothing reads the global RNG. So a
clip depends only on (task, split, seed, k) and the keyword options: ``f(n, seed, split,
start=s)`` returns clips s..s+n-1, and ``f(100, ...)`` is the first 100 clips of ``f(1000, ...)``.

Tasks (symbols: N clips, T frames, C = 32):

- :func:`direction_clips`, 4 classes (:data:`DIRECTIONS`). The *target* digit, drawn at full
  intensity, is visible only during a window of K ~ U{window} consecutive frames starting at
  a ~ U{0, ..., T - K}; in the window it moves with constant velocity s ~ U{speeds} pixels per
  frame along the class's direction, its cross-axis coordinate c ~ U{0, ..., R} fixed and its
  start on the axis uniform over every start that keeps it inside (``[0, R - s(K - 1)]``
  moving right/down, ``[s(K - 1), R]`` moving left/up). ``distractors`` other digits, drawn
  at ``distractor_intensity`` (0.5: dimmer than the target, which is the cue that tells
  them apart), are visible in every frame and bounce off the walls: each coordinate is
  ``fold(u0 + v t)`` with u0 ~ U{0, ..., 2R - 1}, v ~ U{-max(speeds), ..., max(speeds)} and
  fold(u) = u mod 2R reflected into [0, R].

  Closed under time reversal: reversing a clip in time gives a clip of the opposite class
  (left <-> right, up <-> down) with the same probability under the generator. The
  target's reversed window starts at T - K - a (uniform as a is), its reversed start is the
  old end, uniform over exactly the starts of the opposite direction, with the same speed;
  a distractor's reversed path is fold(u0' - v t) with u0' = u0 + v (T - 1) mod 2R, again
  uniform and independent of v, and -v is distributed as v. Consequence: a model that sees
  only the multiset of frames (a mean-frame CNN, any order-blind pooling) gets the same
  input distribution for a clip and its reversal, whose labels differ, so it cannot beat
  50% on a balanced test set: it may learn the axis (horizontal or vertical) but not the
  sign. A recurrent model must see the order of the target's few frames, among distractors,
  possibly early in a clip of T frames.
- :func:`caption_clips`: two segments of L = ``segment_length`` frames (T = 2L); in segment j
  one digit d_j moves with constant velocity in direction r_j for all L frames (start and
  speed drawn as the target's above, so each segment is closed under reversal too), then
  vanishes. Caption: ``"the digit {d1} moves {r1} then the digit {d2} moves {r2}"``; slots
  (d1, r1, d2, r2) with r an index of :data:`DIRECTIONS`. Reversing one segment alone keeps
  the frame multiset and flips that segment's direction, so an order-blind encoder's
  direction slots are at most 50% right.
- :func:`bouncing_clips`: ``digits`` digits at full intensity, each coordinate
  fold(u0 + v t) with u0 ~ U{0, ..., 2R - 1} and v ~ U{+-1, ..., +-max_speed} (never 0), for
  next-frame prediction; copy-last-frame is the baseline to beat.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

DIRECTIONS = ("left", "right", "up", "down")  # class index = position
OPPOSITE = (1, 0, 3, 2)  # the class of a clip reversed in time
CANVAS = 32  # frames are CANVAS x CANVAS
GLYPH_SIZE = 12  # 8x8 glyphs upsampled to this size
REACH = CANVAS - GLYPH_SIZE  # R: the largest top-left coordinate, 20
SPLITS = ("train", "test")
DIGITS_FILE = "datasets/data/digits.csv.gz"  # inside the scikit-learn package
CAPTION_TEMPLATE = "the digit {} moves {} then the digit {} moves {}"
_CHUNK = 256  # clips rendered at once (bounds the memory of the scatter)
# (row step, column step) of each direction
_STEPS = {0: (0, -1), 1: (0, 1), 2: (-1, 0), 3: (1, 0)}


# ---------------------------------------------------------------------- glyphs


def _digits_path() -> Path:
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("moving digits read their glyphs from scikit-learn's digits.csv.gz, but scikit-learn "
                                  "is not installed: pip install 'scikit-learn>=1.3' (in the rnnkit[tasks] extra)")
    path = Path(next(iter(spec.submodule_search_locations))) / DIGITS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"scikit-learn is installed but has no {DIGITS_FILE} (looked at {path})")
    return path


@lru_cache(maxsize=1)
def _all_glyphs() -> tuple[Tensor, Tensor]:
    """All 1,797 glyphs (1797, 8, 8) in [0, 1] and their digits (1797,), in the file's order."""
    path = _digits_path()
    rows = [line.split(",") for line in gzip.decompress(path.read_bytes()).decode("ascii").split("\n") if line]
    table = torch.tensor([[int(v) for v in row] for row in rows], dtype=torch.int64)  # (1797, 65)
    if table.shape != (1797, 65) or table[:, :64].max() > 16 or not 0 <= table[:, 64].min() <= table[:, 64].max() <= 9:
        raise ValueError(f"{path}: expected 1,797 rows of 64 pixels in 0..16 and a digit, got shape "
                         f"{tuple(table.shape)}")
    return (table[:, :64].reshape(-1, 8, 8).float() / 16), table[:, 64].clone()


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def glyphs(split: str) -> tuple[Tensor, Tensor]:
    """The 8x8 glyphs of a split: ((N, 8, 8) float in [0, 1], (N,) digit labels); train 899, test 898.

    ``train`` holds the file's even-numbered digits, ``test`` the odd-numbered ones.
    """
    images, labels = _all_glyphs()
    offset = SPLITS.index(check_split(split))
    return images[offset::2].clone(), labels[offset::2].clone()


@lru_cache(maxsize=2)
def _sprites(split: str) -> tuple[Tensor, Tensor]:
    """The split's glyphs upsampled to (N, GLYPH_SIZE, GLYPH_SIZE) in grey levels 0..255 (float64 holding
    integers, so drawing stays exact); digits (N,)."""
    images, labels = glyphs(split)
    big = F.interpolate(images[:, None].double(), size=(GLYPH_SIZE, GLYPH_SIZE), mode="bilinear",
                        align_corners=False)[:, 0]  # (N, G, G)
    return (big.clamp(0, 1) * 255).round(), labels


# ---------------------------------------------------------------------- drawing


def _generator(task: str, split: str, seed: int, index: int) -> torch.Generator:
    digest = hashlib.sha256(f"{task}:{split}:{seed}:{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _randint(g: torch.Generator, low: int, high: int) -> int:
    """One integer uniform in [low, high], both included."""
    return int(torch.randint(low, high + 1, (1,), generator=g))


def _fold(u: int) -> int:
    """u mod 2R reflected into [0, R]: the coordinate of a point bouncing between 0 and R."""
    u %= 2 * REACH
    return u if u <= REACH else 2 * REACH - u


def _bouncing_path(g: torch.Generator, length: int, speeds: list[int]) -> list[tuple[int, int]]:
    """(row, column) of one bouncing digit at each of ``length`` frames; each axis' velocity from ``speeds``."""
    u_row, u_col = _randint(g, 0, 2 * REACH - 1), _randint(g, 0, 2 * REACH - 1)
    v_row = speeds[_randint(g, 0, len(speeds) - 1)]
    v_col = speeds[_randint(g, 0, len(speeds) - 1)]
    return [(_fold(u_row + v_row * t), _fold(u_col + v_col * t)) for t in range(length)]


def _straight_path(g: torch.Generator, direction: int, speed: int, frames: int) -> list[tuple[int, int]]:
    """(row, column) of a digit moving ``speed`` pixels a frame in ``direction`` for ``frames`` frames, its
    start uniform over every start that keeps it inside, its cross-axis coordinate uniform in [0, R]."""
    travel = speed * (frames - 1)
    d_row, d_col = _STEPS[direction]
    step = d_row + d_col  # +1 (right, down) or -1 (left, up)
    along = _randint(g, 0, REACH - travel) if step > 0 else _randint(g, travel, REACH)
    across = _randint(g, 0, REACH)
    path = [along + step * speed * t for t in range(frames)]
    return [(p, across) if d_row else (across, p) for p in path]


# one drawn digit: (clip, frame, row, column, glyph, intensity)
_Entry = tuple[int, int, int, int, int, float]


def _render(n: int, length: int, entries: list[_Entry], sprites: Tensor) -> Tensor:
    """Paste the entries' glyphs onto (n, T, C, C) zero frames, overlaps by pixelwise maximum; float32 in [0, 1]."""
    canvas = torch.zeros(n * length * CANVAS * CANVAS)  # grey levels 0..255, integers exact in float32
    if entries:
        clip, frame, row, col, glyph, intensity = (torch.tensor(column) for column in zip(*entries))
        offsets = torch.arange(GLYPH_SIZE)
        rows = row[:, None, None] + offsets[None, :, None]  # (E, G, 1)
        cols = col[:, None, None] + offsets[None, None, :]  # (E, 1, G)
        flat = ((clip * length + frame)[:, None, None] * CANVAS + rows) * CANVAS + cols  # (E, G, G)
        patch = (sprites[glyph] * intensity.double()[:, None, None]).round().float()  # (E, G, G) whole grey levels
        # integers: the max is exact and independent of the order of the entries
        canvas.scatter_reduce_(0, flat.reshape(-1), patch.reshape(-1), reduce="amax")
    return (canvas / 255).view(n, length, CANVAS, CANVAS)


def _check_count(name: str, value: int, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value!r}")


def _check_speeds(name: str, speeds: tuple[int, ...], frames: int) -> None:
    if not speeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in speeds):
        raise ValueError(f"{name} must be a non-empty tuple of ints >= 1, got {speeds!r}")
    if max(speeds) * (frames - 1) > REACH:
        raise ValueError(f"{name} {speeds!r} over {frames} frames moves up to {max(speeds) * (frames - 1)} pixels, "
                         f"more than the {REACH} the canvas allows; lower the speed or the frames")


def _clips(task: str, n: int, seed: int, split: str, start: int, length: int, draw) -> tuple[Tensor, list]:
    """Render clips start..start+n-1; ``draw(g, sprite_labels)`` returns one clip's (entries, info)."""
    _check_count("n", n, 0)
    _check_count("start", start, 0)
    sprites, labels = _sprites(check_split(split))
    out = torch.empty(n, length, CANVAS, CANVAS)
    infos = []
    for first in range(0, n, _CHUNK):
        entries: list[_Entry] = []
        count = min(_CHUNK, n - first)
        for j in range(count):
            drawn, info = draw(_generator(task, split, seed, start + first + j), labels)
            entries.extend((j, *e) for e in drawn)
            infos.append(info)
        out[first : first + count] = _render(count, length, entries, sprites)
    return out, infos


# ---------------------------------------------------------------------- the three tasks


def direction_clips(n: int, seed: int, split: str, length: int = 20, *, window: tuple[int, int] = (4, 7),
                    speeds: tuple[int, ...] = (1, 2, 3), distractors: int = 2, distractor_intensity: float = 0.5,
                    start: int = 0) -> tuple[Tensor, Tensor]:
    """Clips of the direction task (module notes): ((n, T, 32, 32) float32 in [0, 1], (n,) labels in 0..3).

    The label is the index in :data:`DIRECTIONS` of the full-intensity target digit's motion,
    visible for K ~ U{window[0], ..., window[1]} frames; ``distractors`` dimmer digits bounce.
    Reversing a clip in time (``x.flip(1)``) gives a clip of label ``OPPOSITE[y]``, equally likely.
    """
    _check_count("length", length, 2)
    low, high = window
    if not (isinstance(low, int) and isinstance(high, int) and 2 <= low <= high <= length):
        raise ValueError(f"window must be (low, high) ints with 2 <= low <= high <= length ({length}), got {window!r}")
    _check_speeds("speeds", speeds, high)
    _check_count("distractors", distractors, 0)
    if not 0 < distractor_intensity <= 1:
        raise ValueError(f"distractor_intensity must be in (0, 1], got {distractor_intensity!r}")
    bounce = list(range(-max(speeds), max(speeds) + 1))

    def draw(g: torch.Generator, labels: Tensor):
        direction = _randint(g, 0, 3)
        speed = speeds[_randint(g, 0, len(speeds) - 1)]
        frames = _randint(g, low, high)
        first = _randint(g, 0, length - frames)
        glyph = _randint(g, 0, len(labels) - 1)
        path = _straight_path(g, direction, speed, frames)
        entries = [(first + t, r, c, glyph, 1.0) for t, (r, c) in enumerate(path)]
        for _ in range(distractors):
            other = _randint(g, 0, len(labels) - 1)
            entries += [(t, r, c, other, distractor_intensity) for t, (r, c) in enumerate(_bouncing_path(g, length,
                                                                                                       bounce))]
        return entries, direction

    clips, directions = _clips("direction", n, seed, split, start, length, draw)
    return clips, torch.tensor(directions, dtype=torch.long)


def caption_clips(n: int, seed: int, split: str, *, segment_length: int = 10, speeds: tuple[int, ...] = (1, 2),
                  distractors: int = 0, distractor_intensity: float = 0.5,
                  start: int = 0) -> tuple[Tensor, list[str], Tensor]:
    """Two-segment clips: ((n, 2L, 32, 32) float32, captions, slots (n, 4) long: d1, r1, d2, r2).

    Segment j (frames [jL, (j + 1)L)) shows digit d_j moving in direction r_j (module notes);
    the captions are ``CAPTION_TEMPLATE.format(d1, DIRECTIONS[r1], d2, DIRECTIONS[r2])``.
    ``distractors`` dimmer digits bounce through all 2L frames (none by default).
    """
    _check_count("segment_length", segment_length, 2)
    _check_speeds("speeds", speeds, segment_length)
    _check_count("distractors", distractors, 0)
    if not 0 < distractor_intensity <= 1:
        raise ValueError(f"distractor_intensity must be in (0, 1], got {distractor_intensity!r}")
    length = 2 * segment_length
    bounce = list(range(-max(speeds), max(speeds) + 1))

    def draw(g: torch.Generator, labels: Tensor):
        entries, slots = [], []
        for segment in range(2):
            digit, direction = _randint(g, 0, 9), _randint(g, 0, 3)
            speed = speeds[_randint(g, 0, len(speeds) - 1)]
            choices = (labels == digit).nonzero()[:, 0]
            glyph = int(choices[_randint(g, 0, len(choices) - 1)])
            path = _straight_path(g, direction, speed, segment_length)
            entries += [(segment * segment_length + t, r, c, glyph, 1.0) for t, (r, c) in enumerate(path)]
            slots += [digit, direction]
        for _ in range(distractors):
            other = _randint(g, 0, len(labels) - 1)
            entries += [(t, r, c, other, distractor_intensity) for t, (r, c) in enumerate(_bouncing_path(g, length,
                                                                                                       bounce))]
        return entries, slots

    clips, slots = _clips("caption", n, seed, split, start, length, draw)
    slots = torch.tensor(slots, dtype=torch.long).reshape(n, 4)
    return clips, [caption(s) for s in slots.tolist()], slots


def caption(slots) -> str:
    """The caption of slots (d1, r1, d2, r2): "the digit 3 moves left then the digit 7 moves down"."""
    d1, r1, d2, r2 = (int(v) for v in slots)
    return CAPTION_TEMPLATE.format(d1, DIRECTIONS[r1], d2, DIRECTIONS[r2])


def parse_caption(text: str) -> tuple[int, int, int, int]:
    """The slots (d1, r1, d2, r2) of a caption; a text off the template is a ValueError that quotes it."""
    words = text.split()
    template = CAPTION_TEMPLATE.split()
    holes = [i for i, w in enumerate(template) if w == "{}"]
    if len(words) != len(template) or any(w != t for w, t in zip(words, template) if t != "{}"):
        raise ValueError(f"caption must read {CAPTION_TEMPLATE.format('D', 'DIR', 'D', 'DIR')!r}, got {text!r}")
    d1, r1, d2, r2 = (words[i] for i in holes)
    if d1 not in "0123456789" or d2 not in "0123456789" or len(d1) != 1 or len(d2) != 1:
        raise ValueError(f"caption digits must be 0-9, got {d1!r} and {d2!r} in {text!r}")
    if r1 not in DIRECTIONS or r2 not in DIRECTIONS:
        raise ValueError(f"caption directions must be one of {', '.join(DIRECTIONS)}, got {r1!r} and {r2!r}")
    return int(d1), DIRECTIONS.index(r1), int(d2), DIRECTIONS.index(r2)


def frame_digit_labels(slots: Tensor, segment_length: int = 10) -> Tensor:
    """Which digit each frame of a caption clip shows: (n, 2L) long, d1 in segment 1 and d2 in segment 2.

    For pretraining a frame CNN on the digits before the captioner (slots from :func:`caption_clips`
    with the same ``segment_length``).
    """
    if slots.dim() != 2 or slots.shape[1] != 4:
        raise ValueError(f"slots must be (n, 4): d1, r1, d2, r2, got shape {tuple(slots.shape)}")
    _check_count("segment_length", segment_length, 2)
    return slots[:, [0, 2]].long().repeat_interleave(segment_length, dim=1)  # (n, 2L)


def bouncing_clips(n: int, seed: int, split: str, length: int = 20, digits: int = 2, *, max_speed: int = 3,
                   start: int = 0) -> Tensor:
    """(n, T, 32, 32) float32 in [0, 1]: ``digits`` digits moving with constant velocity, each axis'
    speed in {1, ..., max_speed} either way, bouncing off the walls (module notes)."""
    _check_count("length", length, 1)
    _check_count("digits", digits, 1)
    _check_count("max_speed", max_speed, 1)
    if max_speed > REACH:
        raise ValueError(f"max_speed must be <= {REACH}, got {max_speed!r}")
    velocities = [v for v in range(-max_speed, max_speed + 1) if v != 0]

    def draw(g: torch.Generator, labels: Tensor):
        entries = []
        for _ in range(digits):
            glyph = _randint(g, 0, len(labels) - 1)
            entries += [(t, r, c, glyph, 1.0) for t, (r, c) in enumerate(_bouncing_path(g, length, velocities))]
        return entries, None

    return _clips("bouncing", n, seed, split, start, length, draw)[0]


def clip_digest(clips: Tensor) -> str:
    """sha256 of the clips quantized to uint8 (round(255 x)): the golden value of the tests."""
    return hashlib.sha256((clips * 255).round().to(torch.uint8).contiguous().numpy().tobytes()).hexdigest()
