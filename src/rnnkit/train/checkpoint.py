"""Checkpoints: a directory of safetensors and JSON files, written atomically, never unpickled.

A checkpoint directory holds

    model.safetensors      the model's state_dict
    optimizer.safetensors  the optimizer's tensors, named ``state.{param_index}.{key}``; the rest of
                           its state_dict (param_groups, non-tensor state) is JSON in the file's
                           header metadata under "rnnkit.optimizer" (optional file)
    config.json            task, cell, sizes, ... plus "format_version" and "rnnkit_version"
    vocab.json             the vocabulary (optional file)
    trainer.json           step, counters, python and numpy RNG states: anything JSON
    trainer.safetensors    torch and CUDA RNG states, carried TBPTT state, ... (optional file)

Loading reads only these files and unpickles nothing, so a checkpoint from a stranger can at
worst hold wrong numbers, never run code. JSON is written by Python's ``json``, which spells
non-finite floats ``NaN`` and ``Infinity`` (a best metric that starts at infinity survives).

Atomic replacement (POSIX). ``save(D)`` writes everything into the sibling ``.D.tmp-PID``,
fsyncs each file and that directory, then renames ``D`` to ``.D.old-PID``, renames
``.D.tmp-PID`` to ``D``, fsyncs the parent and deletes ``.D.old-PID``. Each rename is atomic, so
at every instant ``D`` or ``.D.old-PID`` is a complete checkpoint. A crash between the two
renames leaves only ``.D.old-PID``: ``load(D)`` and ``resolve(D)`` then use it (with a
warning), and the next ``save(D)`` deletes it once the new ``D`` is in place. A crash before
them leaves ``.D.tmp-PID``, which load and resolve never look at and the next ``save(D)``
deletes. A ``.D.old-PID`` is deleted by renaming it to a ``.D.tmp-`` name first, so a crash in the
middle of deleting it never leaves a partial ``.old-`` behind. One writer per directory: two
processes saving the same ``D`` at once is not supported.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import Tensor

from .._version import __version__

FORMAT_VERSION = 1

MODEL, OPTIMIZER, CONFIG = "model.safetensors", "optimizer.safetensors", "config.json"
VOCAB, TRAINER, TRAINER_TENSORS = "vocab.json", "trainer.json", "trainer.safetensors"
REQUIRED = (MODEL, CONFIG, TRAINER)
FILES = frozenset((MODEL, OPTIMIZER, CONFIG, VOCAB, TRAINER, TRAINER_TENSORS))
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")

_ORDER_KEY = "rnnkit.order"  # safetensors sorts its tensors by name; this keeps the dict's order
_OPTIMIZER_KEY = "rnnkit.optimizer"
_TAGS = frozenset(("__tensor__", "__tuple__", "__dict__"))  # how optimizer JSON marks what JSON lacks

PathLike = str | os.PathLike


class CheckpointError(ValueError):
    """A checkpoint cannot be read or written; the message names the path, the problem and a fix."""


@dataclass
class Checkpoint:
    """Everything a run needs to continue or a model needs to be used; one field per file."""

    model: dict[str, Tensor]  # model.safetensors: the model's state_dict
    optimizer: dict | None = None  # optimizer.safetensors: a torch optimizer state_dict, rebuilt exactly
    config: dict = field(default_factory=dict)  # config.json: task, cell, sizes; save() adds the versions
    vocab: dict | None = None  # vocab.json
    trainer: dict = field(default_factory=dict)  # trainer.json: step, counters, python/numpy RNG states
    trainer_tensors: dict[str, Tensor] = field(default_factory=dict)  # trainer.safetensors: torch RNG, TBPTT state


# ---------------------------------------------------------------------------------------- save


def save(directory: PathLike, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``directory`` atomically, replacing the checkpoint there if any.

    Everything that can be refused (non-finite tensors, values JSON cannot hold, a directory
    that is not a checkpoint) is checked before the first byte is written. Tensors on a GPU are
    copied to the CPU; dtypes are kept. Returns ``Path(directory)``.
    """
    target = Path(os.path.abspath(directory))
    tensor_files = {MODEL: (ckpt.model, {})}
    if ckpt.optimizer is not None:
        tensors, meta = optimizer_to_files(ckpt.optimizer)
        tensor_files[OPTIMIZER] = (tensors, {_OPTIMIZER_KEY: json.dumps(meta, separators=(",", ":"))})
    tensor_files[TRAINER_TENSORS] = (ckpt.trainer_tensors, {})
    for file, (tensors, _) in tensor_files.items():
        _check_tensors(target, file, tensors)
    bad = [f"{file}: {name}" for file, (tensors, _) in tensor_files.items() for name in all_finite(tensors)]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(
            f"refusing to save {target}: non-finite values (NaN/Inf) in {shown}; the training has diverged: "
            "keep the last good checkpoint and resume with a lower learning rate or stronger clipping"
        )
    config = {**ckpt.config, "format_version": FORMAT_VERSION, "rnnkit_version": __version__}
    texts = {CONFIG: _to_json(target, CONFIG, config), TRAINER: _to_json(target, TRAINER, ckpt.trainer)}
    if ckpt.vocab is not None:
        texts[VOCAB] = _to_json(target, VOCAB, ckpt.vocab)
    _check_replaceable(target)

    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_siblings(target, tmp=True, old=_is_checkpoint(target))  # a complete target makes .old-* garbage
        tmp.mkdir()
        for file, (tensors, meta) in tensor_files.items():
            prepared = _prepare(tensors)
            safetensors.torch.save_file(prepared, tmp / file, metadata={_ORDER_KEY: json.dumps(list(prepared)), **meta})
            _fsync(tmp / file)
        for file, text in texts.items():
            with open(tmp / file, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        _fsync(tmp)
        _swap_in(tmp, target)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception) and not isinstance(e, CheckpointError):
            raise CheckpointError(
                f"could not write checkpoint {target}: {e}; the previous checkpoint there, if any, is intact: "
                "check free disk space and permissions"
            ) from e
        raise
    _remove_siblings(target, tmp=False, old=True)
    return Path(directory)


def _check_tensors(target: Path, file: str, tensors: dict) -> None:
    for name, t in tensors.items():
        if not isinstance(name, str) or not isinstance(t, Tensor):
            raise CheckpointError(
                f"cannot save {target}: {file} takes a dict of str -> Tensor, but entry {name!r} is a "
                f"{type(name).__name__} -> {type(t).__name__}; put other values in the JSON parts (config, trainer)"
            )
        if t.layout != torch.strided:
            raise CheckpointError(f"cannot save {target}: {file} entry {name!r} is {t.layout}; pass a dense tensor")


def _prepare(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous, no two tensors sharing memory: what safetensors can write."""
    out, seen = {}, set()
    for name, t in tensors.items():
        t = t.detach().to("cpu")
        if not t.is_contiguous() or t.untyped_storage().data_ptr() in seen:  # tied weights, views
            t = t.clone(memory_format=torch.contiguous_format)
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def _to_json(target: Path, file: str, obj: Any) -> str:
    key = _non_str_key(obj, file.removesuffix(".json"))
    if key is not None:
        raise CheckpointError(
            f"cannot save {target}: {key} is not a string, and JSON would silently turn it into one; "
            "use string keys (or a list) in that dict"
        )
    try:
        return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"cannot save {target}: {file} must hold only JSON values ({e}); put tensors in trainer_tensors and "
            "turn other objects into numbers, strings, lists or dicts"
        ) from e


def _non_str_key(obj: Any, where: str) -> str | None:
    """The first dict key under ``obj`` that is not a str, as a readable path, or None."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                return f"the key {k!r} ({type(k).__name__}) of {where}"
            if (found := _non_str_key(v, f"{where}[{k!r}]")) is not None:
                return found
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            if (found := _non_str_key(v, f"{where}[{i}]")) is not None:
                return found
    return None


def _check_replaceable(target: Path) -> None:
    """Refuse to replace (and so delete) anything but a checkpoint or an empty directory."""
    if not target.exists():
        return
    if not target.is_dir():
        raise CheckpointError(f"cannot save a checkpoint to {target}: it is a file; pick a directory name")
    strangers = sorted(p.name for p in target.iterdir() if p.name not in FILES)
    if strangers:
        raise CheckpointError(
            f"refusing to replace {target}: it holds {', '.join(strangers[:5])}, which are not checkpoint files; "
            "save to a new directory (a run keeps its checkpoints in last/ and best/)"
        )


def _swap_in(tmp: Path, target: Path) -> None:
    """Rename the finished ``tmp`` to ``target``; the old target stays complete under .old-PID meanwhile."""
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.rename(target, old)
        try:
            os.rename(tmp, target)
        except BaseException:
            os.rename(old, target)
            raise
    else:
        os.rename(tmp, target)
    _fsync(target.parent)


def _remove_siblings(target: Path, *, tmp: bool, old: bool) -> None:
    """Delete the ``.NAME.tmp-*`` and/or ``.NAME.old-*`` directories that interrupted saves left."""
    if not target.parent.is_dir():
        return
    prefixes = ((f".{target.name}.tmp-",) if tmp else ()) + ((f".{target.name}.old-",) if old else ())
    for p in target.parent.iterdir():
        if p.name.startswith(prefixes):
            if ".old-" in p.name:  # renamed to a .tmp- name first: a kill mid-delete must not leave a partial .old-
                doomed = p.with_name(f".{target.name}.tmp-{os.getpid()}-{p.name}")
                try:
                    os.rename(p, doomed)
                except OSError:
                    continue
                p = doomed
            shutil.rmtree(p, ignore_errors=True)


def _fsync(path: Path) -> None:
    """Flush a file or, on POSIX, a directory (its entries: the renames) to disk."""
    if path.is_dir() and os.name != "posix":
        return  # Windows cannot open a directory
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------- load


def load(directory: PathLike, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read the checkpoint in ``directory``; tensors land on ``map_location``. Never unpickles."""
    path = Path(directory)
    if not path.exists():
        old = _recovered(path)
        if old is None:
            raise CheckpointError(f"checkpoint directory {path} does not exist; check the path (see resolve())")
        path = old
    if path.is_file():
        _refuse_file(path)
    if not (path / MODEL).exists():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(
                f"{path} holds a pickle file {pickles[0]} and no {MODEL}; rnnkit never unpickles (a pickle can run "
                "any code): convert it once, in code you trust, with torch.load(..., weights_only=True) and "
                "rnnkit.train.checkpoint.save"
            )
    missing = [f for f in REQUIRED if not (path / f).is_file()]
    if missing:
        hint = "; it is not a complete rnnkit checkpoint"
        if any((path / sub).is_dir() for sub in ("best", "last")):
            hint = f"; it looks like a run directory: load {path / 'last'} or {path / 'best'}, or pass it to resolve()"
        raise CheckpointError(f"{path} is missing {', '.join(missing)} (required: {', '.join(REQUIRED)}){hint}")

    config = _read_json(path / CONFIG, dict)
    _check_format(path, config)
    model, _ = _read_tensors(path / MODEL, map_location)
    optimizer = None
    if (path / OPTIMIZER).exists():
        tensors, header = _read_tensors(path / OPTIMIZER, map_location)
        if _OPTIMIZER_KEY not in header:
            raise CheckpointError(
                f"{path / OPTIMIZER} has no {_OPTIMIZER_KEY!r} metadata, so it was not written by rnnkit; "
                "delete it to load the model without the optimizer"
            )
        optimizer = optimizer_from_files(tensors, _parse_json(path / OPTIMIZER, header[_OPTIMIZER_KEY], dict))
    vocab = _read_json(path / VOCAB, dict) if (path / VOCAB).exists() else None
    trainer = _read_json(path / TRAINER, dict)
    trainer_tensors = {}
    if (path / TRAINER_TENSORS).exists():
        trainer_tensors, _ = _read_tensors(path / TRAINER_TENSORS, map_location)
    return Checkpoint(model, optimizer, config, vocab, trainer, trainer_tensors)


def resolve(path: PathLike) -> Path:
    """The checkpoint directory that ``path`` names.

    A checkpoint directory (it has model.safetensors and config.json) is itself; a run directory
    gives its ``best/`` if that is a checkpoint, else its ``last/``.
    """
    path = Path(path)
    if _is_checkpoint(path):
        return path
    if not path.exists():
        old = _recovered(path)
        if old is None:
            raise CheckpointError(
                f"{path} does not exist; expected a checkpoint directory (with {MODEL} and {CONFIG}) or a run "
                "directory (with best/ or last/)"
            )
        return old
    if path.is_file():
        _refuse_file(path)
    for sub in ("best", "last"):
        if _is_checkpoint(path / sub):
            return path / sub
        if not (path / sub).exists() and (old := _recovered(path / sub)) is not None:
            return old
    entries = sorted(p.name for p in path.iterdir())
    pickles = [e for e in entries if Path(e).suffix in PICKLE_SUFFIXES]
    if pickles:
        raise CheckpointError(
            f"{path} holds a pickle file {pickles[0]} and no {MODEL}; rnnkit never unpickles (a pickle can run any "
            "code): convert it once, in code you trust, with torch.load(..., weights_only=True) and "
            "rnnkit.train.checkpoint.save"
        )
    held = f"it holds {', '.join(entries[:8])}" + (", ..." if len(entries) > 8 else "") if entries else "it is empty"
    raise CheckpointError(
        f"{path} is neither a checkpoint directory (with {MODEL} and {CONFIG}) nor a run directory (with best/ or "
        f"last/ holding one); {held}: pass a checkpoint directory or the --out directory of a run"
    )


def recover(directory: PathLike) -> bool:
    """Whether a checkpoint is at ``directory``, after putting back the one an interrupted save left.

    If ``directory`` is missing and a complete ``.NAME.old-PID`` is beside it (a crash between a
    save's two renames), that is renamed back to ``directory``. Only the run that writes there calls
    this, before it starts (each rank under torchrun may: the first puts it back); ``load`` never
    renames, so a reader (``evaluate`` during training) cannot race a save.
    """
    path = Path(directory)
    if path.exists():
        return True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # _recovered's "using .old-PID": here it is put back instead
        old = _recovered(path)
    if old is None:
        return False
    try:
        os.rename(old, path)
    except OSError:  # another process of the run (torchrun) put it back first
        return path.exists()
    _fsync(path.parent)
    return True


def _is_checkpoint(path: Path) -> bool:
    return (path / MODEL).is_file() and (path / CONFIG).is_file()


def _recovered(path: Path) -> Path | None:
    """The ``.NAME.old-PID`` checkpoint that a save interrupted between its two renames left, if any."""
    absolute = Path(os.path.abspath(path))
    if not absolute.parent.is_dir():
        return None
    prefix = f".{absolute.name}.old-"
    olds = [p for p in absolute.parent.iterdir() if p.name.startswith(prefix) and _is_checkpoint(p)]
    if not olds:
        return None
    old = max(olds, key=lambda p: p.stat().st_mtime)
    warnings.warn(f"{path} is missing; using {old}, the previous checkpoint an interrupted save left", stacklevel=3)
    return old


def _refuse_file(path: Path) -> None:
    if path.suffix in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path} is a pickle file; rnnkit never unpickles (a pickle can run any code): convert it once, in code "
            "you trust, with torch.load(..., weights_only=True) and rnnkit.train.checkpoint.save"
        )
    if path.suffix == ".safetensors":
        raise CheckpointError(f"{path} is one file; a checkpoint is the directory that holds it: pass {path.parent}")
    raise CheckpointError(f"{path} is a file; expected a checkpoint directory (with {MODEL} and {CONFIG})")


def _check_format(path: Path, config: dict) -> None:
    version = config.get("format_version")
    if version is None:
        raise CheckpointError(
            f"{path / CONFIG} has no format_version, so it was not written by rnnkit.train.checkpoint.save; "
            "re-save the checkpoint with it"
        )
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path / CONFIG}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer rnnkit (format {version}); this is format {FORMAT_VERSION}: upgrade rnnkit"
        )
    if version < FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format {version}, which no rnnkit wrote (format {FORMAT_VERSION} is the first and this "
            "rnnkit's); the config.json was edited or damaged: restore it"
        )


def _read_tensors(file: Path, map_location: str | torch.device) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors of a safetensors file in their saved order, and its header metadata."""
    try:
        with safetensors.safe_open(file, framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except safetensors.SafetensorError as e:
        raise CheckpointError(
            f"{file} is corrupt or truncated ({e}); restore it from a copy or use another checkpoint "
            "(a run keeps last/ and best/)"
        ) from e
    except OSError as e:
        raise CheckpointError(f"cannot read {file}: {e}") from e
    try:
        order = json.loads(header.get(_ORDER_KEY, "null"))
    except json.JSONDecodeError:
        order = None
    if isinstance(order, list) and sorted(order) == sorted(tensors):
        tensors = {name: tensors[name] for name in order}
    device = torch.device(map_location)
    if device.type != "cpu":
        tensors = {name: t.to(device) for name, t in tensors.items()}
    return tensors, header


def _read_json(file: Path, kind: type) -> Any:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {file}: {e}") from e
    return _parse_json(file, text, kind)


def _parse_json(file: Path, text: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{file} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}; the file is damaged or was "
            "edited by hand: fix it there or restore it from a copy"
        ) from e
    if not isinstance(value, kind):
        raise CheckpointError(f"{file} must hold a JSON {kind.__name__}, not a {type(value).__name__}")
    return value


# ----------------------------------------------------------------------------------- optimizer


def optimizer_to_files(state_dict: dict) -> tuple[dict[str, Tensor], dict]:
    """Split a torch optimizer state_dict into tensors and JSON.

    Tensors are named by their path, ``state.{param_index}.{key}`` (``param_groups.{i}.{key}``
    for a tensor learning rate); the JSON holds everything else, marking what JSON lacks:
    ``{"__tensor__": name}``, ``{"__tuple__": [...]}`` (betas) and ``{"__dict__": [[key, value],
    ...]}`` (the int-keyed ``state``), so :func:`optimizer_from_files` rebuilds it exactly.
    """
    tensors: dict[str, Tensor] = {}
    return tensors, _encode(state_dict, "", tensors)


def optimizer_from_files(tensors: dict[str, Tensor], meta: dict) -> dict:
    """The optimizer state_dict that :func:`optimizer_to_files` split; ready for ``load_state_dict``."""
    return _decode(meta, tensors)


def _encode(value: Any, name: str, tensors: dict[str, Tensor]) -> Any:
    if isinstance(value, Tensor):
        if name in tensors:
            raise CheckpointError(f"optimizer state has two tensors named {name!r}; give its keys distinct names")
        tensors[name] = value
        return {"__tensor__": name}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        encoded = [(k, _encode(v, f"{name}.{k}" if name else str(k), tensors)) for k, v in value.items()]
        if all(isinstance(k, str) for k in value) and not _TAGS & value.keys():
            return dict(encoded)
        for k in value:
            if k is not None and not isinstance(k, (str, int, float)):
                raise CheckpointError(f"optimizer state {name or 'dict'} has a key {k!r} that JSON cannot hold")
        return {"__dict__": [[k, v] for k, v in encoded]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(
        f"optimizer state {name} is a {type(value).__name__}, which a checkpoint cannot hold (tensors, numbers, "
        "strings, None, lists, tuples and dicts only)"
    )


def _decode(value: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, inner),) = value.items()
        if tag == "__tensor__":
            if inner not in tensors:
                raise CheckpointError(f"the optimizer metadata names a tensor {inner!r} the file lacks: it is damaged")
            return tensors[inner]
        if tag == "__tuple__":
            return tuple(_decode(v, tensors) for v in inner)
        if tag == "__dict__":
            return {k: _decode(v, tensors) for k, v in inner}
    return {k: _decode(v, tensors) for k, v in value.items()}


# ----------------------------------------------------------------------------------------- RNG


def capture_rng() -> tuple[dict, dict[str, Tensor]]:
    """Every global RNG state: JSON for python and numpy, tensors for torch.

    The JSON is ``{"python": ..., "numpy": ...}`` with the Mersenne Twister words as base64 of
    little-endian uint32; the tensors are ``"torch"`` (the CPU generator, uint8) and
    ``"cuda.{i}"`` for each CUDA device when CUDA is available.
    """
    version, words, gauss_next = random.getstate()
    kind, mt, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    meta = {
        "python": {"version": version, "mt": _b64(words[:-1]), "pos": words[-1], "gauss_next": gauss_next},
        "numpy": {
            "kind": kind,
            "mt": _b64(mt),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
    }
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return meta, tensors


def restore_rng(meta: dict, tensors: dict[str, Tensor]) -> None:
    """Set every global RNG back to what :func:`capture_rng` returned (tensors may be on any device)."""
    try:
        py, npy = meta["python"], meta["numpy"]
        random.setstate((py["version"], (*_unb64(py["mt"]).tolist(), py["pos"]), py["gauss_next"]))
        np.random.set_state((npy["kind"], _unb64(npy["mt"]), npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
        torch.set_rng_state(tensors["torch"].to("cpu"))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"the saved RNG state is incomplete or damaged ({type(e).__name__}: {e})") from e
    cuda = {int(k.split(".")[1]): t for k, t in tensors.items() if k.startswith("cuda.")}
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for i, state in cuda.items():
        if i < available:
            torch.cuda.set_rng_state(state.to("cpu"), i)
    if any(i >= available for i in cuda):
        warnings.warn(
            f"the checkpoint holds RNG states of {len(cuda)} CUDA device(s) but {available} are available; "
            "random numbers on the GPU will differ from the uninterrupted run",
            stacklevel=2,
        )


def _b64(words) -> str:
    return base64.b64encode(np.asarray(words, dtype="<u4").tobytes()).decode("ascii")


def _unb64(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<u4").astype(np.uint32)


def all_finite(tensors: dict[str, Tensor]) -> list[str]:
    """The names of the floating (or complex) tensors that hold a NaN or an Inf; empty when all are finite."""
    return [
        name
        for name, t in tensors.items()
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all())
    ]
