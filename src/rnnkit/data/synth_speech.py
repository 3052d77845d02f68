"""Synthesized speech for `rnnkit asr`: digit strings and short commands spoken by espeak-ng.

    >>> from rnnkit.data.synth_speech import SynthRecipe, generate, add_random_noise
    >>> root = generate(SynthRecipe())   # 1-2 min the first time (7,200 utterances, 222 MB), then the cache
    >>> root / "train.jsonl"             # {"path": "train/000000.flac", "text": "move left three steps", ...} per line

espeak-ng (https://github.com/espeak-ng/espeak-ng) is GPL-3.0-or-later. rnnkit neither vendors
nor requires it: it comes with the optional extra ``pip install "rnnkit[synth]"`` (the
``espeakng-loader`` wheel, which ships ``libespeak-ng.so`` 1.52.0 and its ``espeak-ng-data``),
is called through ``ctypes`` and imported only inside the functions here, never by
``import rnnkit``. The audio it generates is not covered by its license.

What is generated (all of it fixed by :class:`SynthRecipe` and its ``seed``):

- text: lower-case English over ``a-z``, space and ``'``: digit strings ("three seven nine
  two", 1-7 digits) and commands from templates ("turn the red light on", "move left three
  steps"), see :func:`sample_text`;
- voices: ``language+variant`` (``en-us+f3``): 8 English accents x 27 voice variants of
  ``espeak-ng-data/voices/!v``; speed 130-210 words per minute, pitch 30-70 (of 0-100);
- splits: ``train``; ``test``, spoken only by held-out voices (a voice is held out when its
  variant or its accent is); ``test_seen``, new utterances by the training voices;
- files: ``<split>/<index>.flac`` (22,050 Hz, 16-bit, mono) and one JSONL manifest per split.

Noise is not in the files: add it at load time with :func:`add_noise` or
:func:`add_random_noise`, so every epoch hears different noise.

Implementation notes: espeak-ng keeps state between utterances inside the library (the
same text and voice said twice in one process differ in a few samples), and the breathy
voices (``f2``, ``f3``, ``f5``, ...) draw noise from a generator that is seeded from the
clock unless ``espeak_ng_SetRandSeed`` (new in 1.52) seeds it. :func:`generate` therefore
seeds it per utterance and synthesizes in fixed shards of :data:`SHARD_SIZE` utterances,
each in a fresh Python process: the samples are identical for a given recipe and
espeak-ng version, whatever the number of workers, and so are the files' bytes for a given
libsndfile (a FLAC file names its encoder's version). :func:`synthesize` in your own process
is not reproducible that way. espeak-ng also ignores an unknown voice variant without a
word (``en-us+annie`` is plain ``en-us``: the file is ``Annie``), so the variant names are
checked against ``espeak-ng-data/voices/!v`` here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported inside add_noise so the synthesis worker (this file run as a script) starts fast
    import torch

ESPEAKNG_VERSION = "1.52.0"
"""The espeak-ng version the corpus is pinned to (``espeakng-loader==0.2.4``); others give other audio."""

INSTALL_HINT = (
    'pip install "rnnkit[synth]" (or: pip install espeakng-loader==0.2.4); '
    "espeak-ng is GPL-3.0-or-later, so rnnkit does not install it by default"
)

SAMPLE_RATE = 22050
"""Hz, the rate libespeak-ng synthesizes at; the files keep it (resample at load time if needed)."""

ALPHABET = "abcdefghijklmnopqrstuvwxyz '"
"""Every character a transcript can hold."""

SPLITS = ("train", "test", "test_seen")

SHARD_SIZE = 250
"""Utterances per worker process; part of the recipe's hash since it fixes the library's state."""

CACHE_LAYOUT = 1
"""Bumped when the files or the manifests change shape, so old caches are not reused."""

# --- the grammar ---------------------------------------------------------------------------

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COUNTS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")  # "one step" is a template of its own
COLORS = ("red", "green", "blue", "yellow", "white", "black")
OBJECTS = ("box", "ball", "cup", "book", "key", "lamp")
PLACES = ("table", "chair", "shelf", "bed", "door", "window")
DIRECTIONS = ("left", "right", "forward", "back", "up", "down")
ROOMS = ("kitchen", "bedroom", "garden", "office", "hall")
NAMES = ("anna", "ben", "maria", "sam", "lucy", "tom")

TEMPLATES: tuple[str, ...] = (
    "turn the {color} light {onoff}",
    "turn {onoff} the {room} light",
    "move {direction} {count} steps",
    "move {direction} one step",
    "{openclose} the {openable}",
    "pick up the {color} {object}",
    "put the {color} {object} {preposition} the {place}",
    "go to the {room}",
    "set a timer for {count} minutes",
    "call {name} now",
    "don't open the {openable}",
    "where's the {color} {object}",
    "it's in the {room}",
    "stop",
    "yes",
    "no",
)
SLOTS: dict[str, tuple[str, ...]] = {
    "color": COLORS,
    "object": OBJECTS,
    "place": PLACES,
    "openable": ("door", "window", "drawer", "gate", "box"),
    "direction": DIRECTIONS,
    "count": COUNTS,
    "room": ROOMS,
    "name": NAMES,
    "onoff": ("on", "off"),
    "openclose": ("open", "close"),
    "preposition": ("on", "under", "near", "behind"),
}

# --- the voices ----------------------------------------------------------------------------

LANGUAGES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
"""English accents of espeak-ng 1.52 (``espeak-ng-data/lang/gmw``): US, British, Scottish,
Received Pronunciation, Lancaster, West Midlands, Caribbean, New York City."""

VARIANTS = (
    *(f"m{i}" for i in range(1, 8)),
    *(f"f{i}" for i in range(1, 6)),
    "klatt",
    "klatt3",
    "klatt4",
    "adam",
    "Andy",
    "Annie",
    "benjamin",
    "david",
    "edward",
    "linda",
    "max",
    "norbert",
    "steph",
    "travis",
    "zac",
)
"""Voice variants, file names in ``espeak-ng-data/voices/!v``: male, female, Klatt-synthesizer and named voices."""


@dataclass(frozen=True)
class SynthRecipe:
    """Everything that fixes a synthesized corpus; its hash names the cache folder.

    A voice is ``f"{language}+{variant}"``. It is held out (heard only in ``test``) when its
    variant is in ``held_out_variants`` or its language in ``held_out_languages``.
    """

    seed: int = 0  # every random choice below (texts, voices, speeds, pitches) comes from random.Random(seed)
    n_train: int = 6000  # utterances by training voices; 1.16 s each on average (1.9 hours)
    n_test: int = 600  # utterances by held-out voices only: the score on unseen speakers
    n_test_seen: int = 600  # new utterances by the training voices: tells unseen voices from unseen recordings
    languages: tuple[str, ...] = LANGUAGES
    variants: tuple[str, ...] = VARIANTS
    # 2 male, 2 female, 1 Klatt and 1 named variant, in every accent
    held_out_variants: tuple[str, ...] = ("m6", "f4", "klatt4", "Andy", "linda", "zac")
    held_out_languages: tuple[str, ...] = ("en-gb-x-gbcwmd",)  # one accent never heard in training
    speed_wpm: tuple[int, int] = (130, 210)  # espeak-ng rate, words per minute, inclusive (its default is 175)
    pitch: tuple[int, int] = (30, 70)  # espeak-ng base pitch, 0-100 (50 is the voice's own), inclusive
    digit_fraction: float = 0.5  # share of digit strings; the rest are commands from TEMPLATES
    max_digits: int = 7  # digit strings are 1..max_digits digits long
    audio_format: str = "flac"  # "flac" (lossless, ~half the size) or "wav"

    def __post_init__(self) -> None:
        for name in ("n_train", "n_test", "n_test_seen"):
            if getattr(self, name) < 0:
                raise ValueError(f"SynthRecipe.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("speed_wpm", "pitch"):
            low, high = getattr(self, name)
            if not low <= high:
                raise ValueError(f"SynthRecipe.{name} must be (low, high) with low <= high, got {(low, high)}")
        if not (80 <= self.speed_wpm[0] and self.speed_wpm[1] <= 450):
            raise ValueError(
                f"SynthRecipe.speed_wpm must lie in espeak-ng's 80-450 words per minute, got {self.speed_wpm}"
            )
        if not (0 <= self.pitch[0] and self.pitch[1] <= 100):
            raise ValueError(f"SynthRecipe.pitch must lie in espeak-ng's 0-100, got {self.pitch}")
        if not 0.0 <= self.digit_fraction <= 1.0:
            raise ValueError(f"SynthRecipe.digit_fraction must be in [0, 1], got {self.digit_fraction}")
        if self.max_digits < 1:
            raise ValueError(f"SynthRecipe.max_digits must be >= 1, got {self.max_digits}")
        if self.audio_format not in ("flac", "wav"):
            raise ValueError(f"SynthRecipe.audio_format must be 'flac' or 'wav', got {self.audio_format!r}")
        unknown = set(self.held_out_variants) - set(self.variants)
        if unknown:
            raise ValueError(f"SynthRecipe.held_out_variants {sorted(unknown)} are not in variants {self.variants}")
        unknown = set(self.held_out_languages) - set(self.languages)
        if unknown:
            raise ValueError(f"SynthRecipe.held_out_languages {sorted(unknown)} are not in languages {self.languages}")
        train, held_out = self.train_voices(), self.held_out_voices()
        if (self.n_train or self.n_test_seen) and not train:
            raise ValueError("SynthRecipe holds out every voice: no voice is left for train and test_seen")
        if self.n_test and not held_out:
            raise ValueError(
                "SynthRecipe holds out no voice (held_out_variants and held_out_languages are empty) but n_test > 0"
            )

    def voices(self) -> list[str]:
        """Every voice, ``"language+variant"``, languages outer."""
        return [f"{language}+{variant}" for language in self.languages for variant in self.variants]

    def is_held_out(self, voice: str) -> bool:
        language, variant = voice.split("+")
        return language in self.held_out_languages or variant in self.held_out_variants

    def train_voices(self) -> list[str]:
        """Voices of ``train`` and ``test_seen``."""
        return [v for v in self.voices() if not self.is_held_out(v)]

    def held_out_voices(self) -> list[str]:
        """Voices of ``test`` only."""
        return [v for v in self.voices() if self.is_held_out(v)]

    def key(self) -> str:
        """16 hex digits of sha256 over the recipe, the espeak-ng version and the cache layout."""
        what = {"recipe": dataclasses.asdict(self), "espeak_ng": ESPEAKNG_VERSION, "shard_size": SHARD_SIZE}
        what["layout"] = CACHE_LAYOUT
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def sample_text(rng: random.Random, digit_fraction: float = 0.5, max_digits: int = 7) -> str:
    """One transcript of the grammar: a digit string with probability ``digit_fraction``, else a command."""
    if rng.random() < digit_fraction:
        return " ".join(rng.choice(DIGITS) for _ in range(rng.randint(1, max_digits)))
    template = rng.choice(TEMPLATES)
    fill = {slot: rng.choice(words) for slot, words in SLOTS.items() if "{" + slot + "}" in template}
    return template.format(**fill)


def plan(recipe: SynthRecipe) -> dict[str, list[dict[str, Any]]]:
    """The utterances of every split, without audio: ``{split: [{"text", "voice", "speed", "pitch", "seed"}]}``.

    ``seed`` seeds espeak-ng's noise generator before the utterance (breathy voices add noise).
    """
    rng = random.Random(recipe.seed)
    train_voices, held_out_voices = recipe.train_voices(), recipe.held_out_voices()
    sizes = {"train": recipe.n_train, "test": recipe.n_test, "test_seen": recipe.n_test_seen}
    utterances: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        voices = held_out_voices if split == "test" else train_voices
        utterances[split] = [
            {
                "text": sample_text(rng, recipe.digit_fraction, recipe.max_digits),
                "voice": rng.choice(voices),
                "speed": rng.randint(*recipe.speed_wpm),
                "pitch": rng.randint(*recipe.pitch),
                "seed": rng.randrange(2**31),
            }
            for _ in range(sizes[split])
        ]
    return utterances


# --- the espeak-ng binding -----------------------------------------------------------------

# espeak_AUDIO_OUTPUT, espeak_PARAMETER, espeak_POSITION_TYPE and flags of speak_lib.h (API revision 12)
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # as RETRIEVAL (samples go to the callback) but espeak_Synth returns when done
_espeakRATE, _espeakPITCH = 1, 3
_POS_CHARACTER = 1
_espeakCHARS_UTF8 = 1
_EE_OK = 0
_ERRORS = {-1: "EE_INTERNAL_ERROR", 1: "EE_BUFFER_FULL", 2: "EE_NOT_FOUND"}


class _Espeak:
    """libespeak-ng through ctypes, initialized once per process (the library is a global)."""

    def __init__(self) -> None:
        import ctypes

        try:
            import espeakng_loader
        except ImportError:
            raise ImportError(f"synthesized speech needs the espeak-ng library: {INSTALL_HINT}") from None

        class Event(ctypes.Structure):  # espeak_EVENT; only its size matters here, the events are not read
            _fields_ = [
                ("type", ctypes.c_int),
                ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int),
                ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int),
                ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p),
                ("id", ctypes.c_char * 8),  # union of int number, const char *name, char string[8]
            ]

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        # text, size, position, position_type, end_position, flags, unique_identifier*, user_data*
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint]
        lib.espeak_Synth.argtypes += [ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int

        # path: the folder that holds espeak-ng-data; buflength 0: 60 ms callback buffers; options 0: no phoneme events
        data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
        sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, 0)
        if sample_rate != SAMPLE_RATE:
            raise RuntimeError(f"espeak_Initialize returned {sample_rate}; expected the sample rate {SAMPLE_RATE} Hz")
        self.version = lib.espeak_Info(None).decode()
        # espeak-ng silently ignores an unknown variant ("en-us+annie" is plain "en-us": the file is "Annie")
        self.variants = frozenset(p.name for p in (Path(espeakng_loader.get_data_path()) / "voices" / "!v").iterdir())

        self._chunks: list[np.ndarray] = []  # int16 buffers of the utterance being synthesized

        @ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(Event))
        def on_audio(wav, n_samples, events):  # t_espeak_callback: wav is NULL at the end, n_samples may be 0
            if wav and n_samples > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
            return 0  # 0: continue synthesis

        self._on_audio = on_audio  # the library holds only a pointer: keep the Python object alive
        lib.espeak_SetSynthCallback(on_audio)
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]  # espeak-ng >= 1.52: seeds its own noise generator
        lib.espeak_ng_SetRandSeed.restype = ctypes.c_int
        self._lib = lib

    def set_voice(self, voice: str) -> None:
        """Select ``"language"`` or ``"language+variant"``; ValueError if espeak-ng lacks either."""
        variant = voice.partition("+")[2]
        status = self._lib.espeak_SetVoiceByName(voice.encode())
        if status != _EE_OK or (variant and variant not in self.variants):
            why = _ERRORS.get(status, status) if status != _EE_OK else f"no variant file voices/!v/{variant}"
            raise ValueError(
                f"espeak-ng has no voice {voice!r} ({why}); expected 'language+variant' with a language of "
                "espeak-ng-data/lang and a variant file name of espeak-ng-data/voices/!v (case matters), "
                "e.g. 'en-us+f3'"
            )

    def say(self, text: str, voice: str, speed: int, pitch: int, seed: int) -> np.ndarray:
        """int16 samples (T,) at SAMPLE_RATE."""
        self.set_voice(voice)
        for parameter, value in ((_espeakRATE, speed), (_espeakPITCH, pitch)):
            status = self._lib.espeak_SetParameter(parameter, value, 0)  # 0: absolute, not relative
            if status != _EE_OK:
                raise RuntimeError(f"espeak_SetParameter({parameter}, {value}) failed: {_ERRORS.get(status, status)}")
        self._lib.espeak_ng_SetRandSeed(seed)  # breath and whisper noise; unseeded, it differs run to run
        self._chunks = []
        encoded = text.encode("utf-8") + b"\0"
        status = self._lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _espeakCHARS_UTF8, None, None)
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed on {text!r} with voice {voice!r}: {_ERRORS.get(status, status)}")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)


_ESPEAK: _Espeak | None = None


def _espeak() -> _Espeak:
    global _ESPEAK
    if _ESPEAK is None:
        _ESPEAK = _Espeak()
    return _ESPEAK


def espeak_version() -> str:
    """The version of the espeak-ng library that :func:`synthesize` uses, e.g. ``"1.52.0"``."""
    return _espeak().version


def synthesize(text: str, voice: str = "en-us", speed: int = 175, pitch: int = 50, seed: int = 0) -> np.ndarray:
    """Speak ``text`` with espeak-ng: float32 samples in [-1, 1), shape (T,), at :data:`SAMPLE_RATE` (22,050 Hz).

    ``voice`` is ``"language"`` or ``"language+variant"`` (``"en-gb-scotland+m3"``), ``speed`` in words
    per minute (80-450), ``pitch`` 0-100 (50: the voice's own), ``seed`` seeds its noise generator.
    Not bit-reproducible across calls in one process (see the module's implementation notes).

    Raises:
        ImportError: espeak-ng is not installed (``pip install "rnnkit[synth]"``).
        ValueError: espeak-ng has no such voice.
    """
    return _espeak().say(text, voice, speed, pitch, seed).astype(np.float32) / 32768.0


# --- the corpus ----------------------------------------------------------------------------


def default_cache_root() -> Path:
    """``$RNNKIT_CACHE/synth`` when that is set, else ``~/.cache/rnnkit/synth``."""
    root = os.environ.get("RNNKIT_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "rnnkit") / "synth"


def generate(
    recipe: SynthRecipe | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Synthesize ``recipe``'s corpus into ``<cache_dir>/<recipe.key()>`` and return that folder; reuse it if complete.

    The folder holds ``train/``, ``test/``, ``test_seen/`` with ``000000.flac``... and the manifests
    ``train.jsonl``, ``test.jsonl``, ``test_seen.jsonl``: one JSON object per line with ``path``
    (relative to the manifest), ``text``, ``voice``, ``speed`` (words per minute), ``pitch`` and
    ``duration`` (seconds); ``rnnkit.data.manifest.read_manifest`` reads them. ``recipe.json`` is
    written last and marks the folder complete. The folder is built in a temporary folder beside
    it and renamed into place, so an interrupted run leaves no half corpus behind.

    Args:
        recipe: what to generate; ``SynthRecipe()`` if None.
        cache_dir: the folder that holds one subfolder per recipe; :func:`default_cache_root` if None.
        workers: synthesis processes at once; ``min(4, os.cpu_count())`` if None. The audio does not depend on it.
        progress: print a line to stderr after each shard of :data:`SHARD_SIZE` utterances.

    Raises:
        ImportError: espeak-ng is not installed (``pip install "rnnkit[synth]"``).
    """
    recipe = SynthRecipe() if recipe is None else recipe
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    final = root / recipe.key()
    if (final / "recipe.json").is_file():
        return final
    _check_synth_installed()
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")

    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{recipe.key()}-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    try:
        utterances = plan(recipe)
        jobs: list[dict[str, Any]] = []  # every utterance in split order; the shards cut this list
        for split in SPLITS:
            (tmp / split).mkdir()
            for index, utterance in enumerate(utterances[split]):
                jobs.append({**utterance, "split": split, "path": f"{split}/{index:06d}.{recipe.audio_format}"})
        shards = [jobs[start : start + SHARD_SIZE] for start in range(0, len(jobs), SHARD_SIZE)]
        started, done = time.perf_counter(), 0
        n_samples: list[int] = []
        with ThreadPoolExecutor(max_workers=workers) as pool:  # threads only wait on the worker processes
            for shard, counts in zip(shards, pool.map(lambda shard: _run_shard(tmp, shard), shards)):
                n_samples += counts
                done += len(shard)
                if progress and len(shards) > 1:
                    seconds = time.perf_counter() - started
                    print(f"synth speech: {done}/{len(jobs)} utterances, {seconds:.0f} s -> {final}", file=sys.stderr)
        for split in SPLITS:
            with open(tmp / f"{split}.jsonl", "w", encoding="utf-8") as manifest:
                for job, count in zip(jobs, n_samples):
                    if job["split"] != split:
                        continue
                    row = {"path": job["path"], "text": job["text"]}
                    row |= {"voice": job["voice"], "speed": job["speed"], "pitch": job["pitch"]}
                    row["duration"] = round(count / SAMPLE_RATE, 4)
                    manifest.write(json.dumps(row) + "\n")
        info = {
            "recipe": dataclasses.asdict(recipe),
            "key": recipe.key(),
            "espeak_ng": ESPEAKNG_VERSION,
            "sample_rate": SAMPLE_RATE,
            "shard_size": SHARD_SIZE,
            "counts": {split: len(utterances[split]) for split in SPLITS},
            "train_voices": recipe.train_voices(),
            "held_out_voices": recipe.held_out_voices(),
            "license": "generated by espeak-ng (GPL-3.0-or-later); its output is not covered by its license",
        }
        (tmp / "recipe.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        try:
            tmp.rename(final)
        except OSError:
            if not (final / "recipe.json").is_file():  # not another process that finished first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final


def _check_synth_installed() -> None:
    """Fail in this process, with the install hint, before starting workers that would fail the same way."""
    for module in ("espeakng_loader", "soundfile"):
        try:
            __import__(module)
        except ImportError:
            raise ImportError(f"synthesized speech needs {module}: {INSTALL_HINT}") from None


def _run_shard(folder: Path, shard: list[dict[str, Any]]) -> list[int]:
    """Synthesize ``shard`` into ``folder`` in a fresh process (fresh espeak-ng state); its lengths in samples."""
    job = json.dumps({"folder": str(folder), "version": ESPEAKNG_VERSION, "utterances": shard})
    # this file run as a script, so the worker does not `import rnnkit` (torch) and starts in ~0.2 s;
    # through runpy with sys.path[0] dropped, so neither this folder nor the working directory shadows a module
    run_file = "import runpy, sys; del sys.path[0]; runpy.run_path(sys.argv[1], run_name='__main__')"
    done = subprocess.run([sys.executable, "-c", run_file, __file__], input=job, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the espeak-ng worker failed (exit {done.returncode}):\n{done.stderr.strip()}")
    return json.loads(done.stdout)


def _worker(job: dict[str, Any]) -> list[int]:
    """Synthesize and write each utterance of ``job``; return their lengths in samples."""
    import soundfile

    espeak = _espeak()
    if espeak.version != job["version"]:
        raise RuntimeError(
            f"espeak-ng {espeak.version} is installed; the corpus is pinned to {job['version']} "
            '(other versions give other audio): pip install "rnnkit[synth]"'
        )
    folder = Path(job["folder"])
    lengths = []
    for u in job["utterances"]:
        samples = espeak.say(u["text"], u["voice"], u["speed"], u["pitch"], u["seed"])  # int16 (T,)
        if samples.size == 0:
            raise RuntimeError(f"espeak-ng produced no audio for {u['text']!r} with voice {u['voice']!r}")
        # soundfile writes int16 as PCM_16 unchanged: the files are the library's samples bit for bit
        soundfile.write(folder / u["path"], samples, SAMPLE_RATE, subtype="PCM_16")
        lengths.append(int(samples.size))
    return lengths


# --- noise at load time --------------------------------------------------------------------

NOISE_COLORS = ("white", "pink")


def add_noise(wave: torch.Tensor, snr_db: float, generator: torch.Generator, color: str = "white") -> torch.Tensor:
    """``wave`` plus Gaussian noise whose mean power is exactly ``mean(wave**2) / 10**(snr_db / 10)``.

    ``wave`` is (T,) or (B, T), float; each row gets its own noise at the same SNR, measured over
    the whole row (silences included). ``color``: ``"white"`` (flat spectrum) or ``"pink"``
    (power ~ 1/f, white noise shaped in the frequency domain, DC removed). The noise is drawn
    from ``generator`` on ``wave``'s device, so the same generator state gives the same result.
    """
    import torch

    if wave.dim() not in (1, 2) or not wave.is_floating_point():
        raise ValueError(f"wave must be a float tensor (T,) or (B, T); got {tuple(wave.shape)} {wave.dtype}")
    if color not in NOISE_COLORS:
        raise ValueError(f"color must be one of {NOISE_COLORS}, got {color!r}")
    rows = wave.reshape(-1, wave.shape[-1])  # (B, T)
    T = rows.shape[-1]
    noise = torch.randn(rows.shape, generator=generator, device=wave.device, dtype=torch.float64)  # (B, T)
    if color == "pink":
        spectrum = torch.fft.rfft(noise, dim=-1)  # (B, T // 2 + 1)
        f = torch.arange(spectrum.shape[-1], device=wave.device, dtype=torch.float64)  # frequency bins
        scale = torch.where(f > 0, f.clamp(min=1).rsqrt(), torch.zeros_like(f))  # amplitude ~ 1/sqrt(f): power ~ 1/f
        noise = torch.fft.irfft(spectrum * scale, n=T, dim=-1)  # (B, T)
    noise_power = noise.pow(2).mean(-1, keepdim=True).clamp(min=1e-30)  # (B, 1)
    signal_power = rows.double().pow(2).mean(-1, keepdim=True)  # (B, 1)
    target = signal_power / 10.0 ** (snr_db / 10.0)  # (B, 1)
    noisy = rows.double() + noise * (target / noise_power).sqrt()  # (B, T)
    return noisy.to(wave.dtype).reshape(wave.shape)


def add_random_noise(
    wave: torch.Tensor,
    generator: torch.Generator,
    snr_db: tuple[float, float] = (10.0, 40.0),
    colors: Sequence[str] = NOISE_COLORS,
) -> torch.Tensor:
    """:func:`add_noise` at an SNR drawn uniformly from ``snr_db`` (low, high) in dB, in a color drawn from ``colors``.

    Both draws come from ``generator``, so a fixed seed per example gives fixed noise.
    """
    import torch

    low, high = snr_db
    if not low <= high:
        raise ValueError(f"snr_db must be (low, high) with low <= high, got {snr_db}")
    if not colors:
        raise ValueError(f"colors must name at least one of {NOISE_COLORS}, got {colors!r}")
    u = torch.rand((), generator=generator, device=generator.device).item()
    color = colors[int(torch.randint(len(colors), (), generator=generator, device=generator.device))]
    return add_noise(wave, low + (high - low) * u, generator, color)


if __name__ == "__main__":  # the worker of _run_shard: a JSON job on stdin, the lengths as JSON on stdout
    print(json.dumps(_worker(json.load(sys.stdin))))
