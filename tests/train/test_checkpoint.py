"""Checkpoints round-trip bit-identically, replace atomically, refuse bad input (design section 5)."""

from __future__ import annotations

import copy
import json
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import Tensor, nn

import rnnkit
from rnnkit.train import checkpoint
from rnnkit.train.checkpoint import Checkpoint, CheckpointError

# ------------------------------------------------------------------------------------ helpers


def assert_same(name: str, expected, got) -> None:
    """Equal down to the bits: same structure, container types, dtypes and tensor bytes; names what differs."""
    same_kind = isinstance(got, dict) if isinstance(expected, dict) else type(got) is type(expected)  # OrderedDict ok
    assert same_kind, f"{name}: {type(got).__name__} != expected {type(expected).__name__}"
    if isinstance(expected, Tensor):
        assert got.dtype == expected.dtype, f"{name}: dtype {got.dtype} != expected {expected.dtype}"
        assert got.shape == expected.shape, f"{name}: shape {tuple(got.shape)} != expected {tuple(expected.shape)}"
        bits = [t.detach().cpu().contiguous().reshape(-1).view(torch.uint8) for t in (expected, got)]
        assert torch.equal(*bits), f"{name}: the bytes differ"
    elif isinstance(expected, dict):
        assert list(got) == list(expected), f"{name}: keys {list(got)} != expected {list(expected)}"
        for k in expected:
            assert_same(f"{name}[{k!r}]", expected[k], got[k])
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), f"{name}: length {len(got)} != expected {len(expected)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            assert_same(f"{name}[{i}]", e, g)
    else:
        assert got == expected, f"{name}: {got!r} != expected {expected!r}"


def mixed_module() -> nn.Module:
    """Parameters in float32, float64 and bfloat16, and an int64 buffer."""
    torch.manual_seed(0)
    module = nn.ModuleDict(
        {
            "f32": nn.Linear(3, 4),
            "f64": nn.Linear(3, 4).double(),
            "bf16": nn.Linear(3, 4).to(torch.bfloat16),
        }
    )
    module.register_buffer("count", torch.arange(5))
    return module


def small_checkpoint(model: dict[str, Tensor] | None = None, **fields) -> Checkpoint:
    return Checkpoint(
        model=mixed_module().state_dict() if model is None else model,
        config={"task": "lm", "cell": "lstm", "hidden_size": 4},
        vocab={"itos": ["a", "b", "ç"]},
        trainer={"step": 3, "best": float("inf"), "stop_reason": None},
        trainer_tensors={"carry.h": torch.randn(2, 4), "carry.c": torch.randn(2, 4, dtype=torch.float64)},
        **fields,
    )


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


# ---------------------------------------------------------------------------------- roundtrip


def test_model_roundtrip_is_bit_identical(tmp_path):
    module = mixed_module()
    weight = torch.randn(3, 5)
    state = {**module.state_dict(), "tied.a": weight, "tied.b": weight, "transposed": weight.t()}
    ckpt = small_checkpoint(state)
    config_before = copy.deepcopy(ckpt.config)

    assert checkpoint.save(tmp_path / "ckpt", ckpt) == tmp_path / "ckpt"
    got = checkpoint.load(tmp_path / "ckpt")

    assert_same("model", state, got.model)
    assert_same("trainer_tensors", ckpt.trainer_tensors, got.trainer_tensors)
    assert got.optimizer is None
    assert got.vocab == ckpt.vocab and got.trainer == ckpt.trainer
    assert got.config == {**config_before, "format_version": 1, "rnnkit_version": rnnkit.__version__}
    assert ckpt.config == config_before, "save() must not change the caller's config"
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json",
        "model.safetensors",
        "trainer.json",
        "trainer.safetensors",
        "vocab.json",
    ]
    assert siblings(tmp_path / "ckpt") == []
    mixed_module().load_state_dict({k: got.model[k] for k in module.state_dict()})  # strict: every key is there


def test_load_never_unpickles(tmp_path, monkeypatch):
    checkpoint.save(tmp_path / "ckpt", small_checkpoint(optimizer=adamw_state()))

    def tripwire(*args, **kwargs):
        raise AssertionError("load() unpickled something")

    for owner, name in [(torch, "load"), (pickle, "load"), (pickle, "loads")]:
        monkeypatch.setattr(owner, name, tripwire)
    assert checkpoint.load(tmp_path / "ckpt").optimizer is not None


# ---------------------------------------------------------------------------------- optimizer


def regression_batch() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 4, generator=g), torch.randn(8, 2, generator=g)


def make_run(kind: str, seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    if kind == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    return model, optimizer


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[Tensor, Tensor], scale: float) -> None:
    x, y = batch
    optimizer.zero_grad()
    ((model(x * scale) - y) ** 2).mean().backward()
    optimizer.step()


def adamw_state() -> dict:
    model, optimizer = make_run("adamw", 0)
    train_step(model, optimizer, regression_batch(), 1.0)
    return optimizer.state_dict()


@pytest.mark.parametrize("kind", ["adamw", "sgd_momentum"])
def test_resumed_optimizer_continues_bit_identically(tmp_path, kind):
    batch = regression_batch()
    model, optimizer = make_run(kind, seed=0)
    for i in range(3):
        train_step(model, optimizer, batch, 1.0 + i)
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    checkpoint.save(tmp_path / "ckpt", Checkpoint(model=model.state_dict(), optimizer=optimizer.state_dict()))
    train_step(model, optimizer, batch, 4.0)  # the uninterrupted run's next step

    ckpt = checkpoint.load(tmp_path / "ckpt")
    assert_same("optimizer", saved_optimizer, ckpt.optimizer)
    resumed, resumed_optimizer = make_run(kind, seed=1)  # different initial weights: all must come from the file
    resumed.load_state_dict(ckpt.model)
    resumed_optimizer.load_state_dict(ckpt.optimizer)
    train_step(resumed, resumed_optimizer, batch, 4.0)

    assert_same("parameters", model.state_dict(), resumed.state_dict())
    assert_same("optimizer after the step", optimizer.state_dict(), resumed_optimizer.state_dict())


def test_optimizer_files_name_tensors_and_keep_what_json_lacks():
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.named_parameters(), lr=torch.tensor(0.01), betas=(0.8, 0.95))
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()

    tensors, meta = checkpoint.optimizer_to_files(state)

    assert set(tensors) == {f"state.{i}.{k}" for i in (0, 1) for k in ("step", "exp_avg", "exp_avg_sq")} | {
        "param_groups.0.lr"
    }
    assert tensors["state.0.step"].dtype == torch.float32
    meta = json.loads(json.dumps(meta))  # it is plain JSON
    assert meta["param_groups"][0]["param_names"] == ["weight", "bias"]
    assert_same("state_dict", state, checkpoint.optimizer_from_files(tensors, meta))


def test_optimizer_state_json_cannot_hold_is_refused():
    with pytest.raises(CheckpointError, match=r"optimizer state param_groups\.0\.schedule is a object"):
        checkpoint.optimizer_to_files({"state": {}, "param_groups": [{"schedule": object(), "params": [0]}]})


# ----------------------------------------------------------------------------------------- RNG


def draws() -> tuple:
    return random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(3)


def test_rng_capture_restore_repeats_every_generator(tmp_path):
    random.gauss(0, 1), np.random.randn()  # leave a cached Gaussian in python's and numpy's state
    meta, tensors = checkpoint.capture_rng()
    checkpoint.save(tmp_path / "ckpt", Checkpoint(model={}, trainer={"rng": meta}, trainer_tensors=tensors))
    expected = draws()
    draws()  # move every generator on

    ckpt = checkpoint.load(tmp_path / "ckpt")
    checkpoint.restore_rng(ckpt.trainer["rng"], ckpt.trainer_tensors)

    assert_same("draws", expected, draws())


def test_restore_rng_names_a_damaged_state():
    meta, tensors = checkpoint.capture_rng()
    del meta["numpy"]
    with pytest.raises(CheckpointError, match="RNG state is incomplete or damaged"):
        checkpoint.restore_rng(meta, tensors)


# -------------------------------------------------------------------------------------- atomic


def test_failed_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "last"
    old = small_checkpoint()
    checkpoint.save(target, old)
    real_save_file = safetensors.torch.save_file
    written = []

    def disk_full_on_second_file(tensors, filename, metadata=None):
        if written:
            raise OSError(28, "No space left on device")
        written.append(filename)
        real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full_on_second_file)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*No space left on device.*intact"):
        checkpoint.save(target, small_checkpoint(optimizer=adamw_state()))
    monkeypatch.undo()

    assert written and Path(written[0]).parent.name.startswith(".last.tmp-"), "the tmp dir was partly written"
    assert siblings(target) == []
    assert_same("model", old.model, checkpoint.load(target).model)
    assert checkpoint.load(target).optimizer is None


def test_next_save_removes_what_a_crash_left(tmp_path):
    target = tmp_path / "last"
    checkpoint.save(target, small_checkpoint())
    crashed = tmp_path / ".last.tmp-999999"  # a crashed writer's half-written directory
    crashed.mkdir()
    (crashed / "model.safetensors").write_bytes(b"\x00" * 7)

    assert checkpoint.resolve(tmp_path) == target  # ignored by resolve and load
    checkpoint.load(target)
    new = small_checkpoint(optimizer=adamw_state())
    checkpoint.save(target, new)

    assert siblings(target) == []
    assert_same("optimizer", new.optimizer, checkpoint.load(target).optimizer)


def test_crash_between_the_renames_is_recovered(tmp_path):
    target = tmp_path / "last"
    old = small_checkpoint()
    checkpoint.save(target, old)
    os.rename(target, tmp_path / ".last.old-999999")  # save() died after its first rename

    with pytest.warns(UserWarning, match="previous checkpoint an interrupted save left"):
        assert_same("model", old.model, checkpoint.load(target).model)
    with pytest.warns(UserWarning):
        assert checkpoint.resolve(tmp_path) == tmp_path / ".last.old-999999"
    new = small_checkpoint(optimizer=adamw_state())
    checkpoint.save(target, new)

    assert siblings(target) == []
    assert_same("optimizer", new.optimizer, checkpoint.load(target).optimizer)


# ------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("where", ["model", "optimizer", "trainer_tensors"])
def test_save_refuses_non_finite_tensors(tmp_path, where):
    ckpt = small_checkpoint(optimizer=adamw_state())
    if where == "model":
        ckpt.model["f32.weight"][0, 0] = float("nan")
        ckpt.model["bf16.bias"][1] = float("-inf")
        named = r"model\.safetensors: f32\.weight, model\.safetensors: bf16\.bias"
    elif where == "optimizer":
        ckpt.optimizer["state"][1]["exp_avg_sq"][0] = float("inf")
        named = r"optimizer\.safetensors: state\.1\.exp_avg_sq"
    else:
        ckpt.trainer_tensors["carry.c"][0, 0] = float("nan")
        named = r"trainer\.safetensors: carry\.c"

    with pytest.raises(CheckpointError, match=rf"refusing to save .*non-finite values \(NaN/Inf\) in {named}"):
        checkpoint.save(tmp_path / "run" / "last", ckpt)
    assert not (tmp_path / "run").exists(), "nothing may be written"


def test_save_refuses_values_json_cannot_hold(tmp_path):
    with pytest.raises(CheckpointError, match=r"trainer\.json must hold only JSON values"):
        checkpoint.save(tmp_path / "a", Checkpoint(model={}, trainer={"carry": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"the key 7 \(int\) of vocab\['itos'\] is not a string"):
        checkpoint.save(tmp_path / "b", Checkpoint(model={}, vocab={"itos": {7: "a"}}))
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_to_replace_a_directory_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(CheckpointError, match=r"refusing to replace .* it holds metrics\.jsonl"):
        checkpoint.save(tmp_path, small_checkpoint())
    assert (tmp_path / "metrics.jsonl").read_text() == "{}\n"


# --------------------------------------------------------------------------------- load errors


def damage(path: Path, how: str) -> None:
    """Break the checkpoint in ``path`` in one way."""
    config = path / "config.json"
    if how.startswith("missing "):
        (path / how.removeprefix("missing ")).unlink()
    elif how == "pickle":
        for file in path.iterdir():
            file.unlink()
        (path / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    elif how.startswith("truncated "):
        file = path / how.removeprefix("truncated ")
        data = file.read_bytes()
        file.write_bytes(data[: len(data) // 2])
    elif how == "bad json":
        config.write_text('{\n  "task": "lm",\n  "cell": ,\n}\n')
    else:
        version = {"no version": None, "newer": 2, "older": 0}[how]
        data = json.loads(config.read_text())
        data.pop("format_version") if version is None else data.update(format_version=version)
        config.write_text(json.dumps(data))


LOAD_ERRORS = {
    "missing model.safetensors": r"is missing model\.safetensors \(required: model\.safetensors, config\.json",
    "missing config.json": r"is missing config\.json",
    "missing trainer.json": r"is missing trainer\.json",
    "pickle": r"holds a pickle file pytorch_model\.bin and no model\.safetensors; rnnkit never unpickles.*convert it",
    "truncated model.safetensors": r"model\.safetensors is corrupt or truncated",
    "truncated optimizer.safetensors": r"optimizer\.safetensors is corrupt or truncated",
    "truncated trainer.safetensors": r"trainer\.safetensors is corrupt or truncated",
    "bad json": r"config\.json is not valid JSON: Expecting value at line 3, column 11",
    "no version": r"config\.json has no format_version",
    "newer": r"written by a newer rnnkit \(format 2\); this is format 1: upgrade rnnkit",
    "older": r"has format 0, which no rnnkit wrote",
}


@pytest.mark.parametrize("how", list(LOAD_ERRORS))
def test_load_explains_what_is_wrong(tmp_path, how):
    path = checkpoint.save(tmp_path / "ckpt", small_checkpoint(optimizer=adamw_state()))
    damage(path, how)
    with pytest.raises(CheckpointError, match=LOAD_ERRORS[how]):
        checkpoint.load(path)


def test_load_explains_wrong_paths(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint directory .*nowhere does not exist"):
        checkpoint.load(tmp_path / "nowhere")
    (tmp_path / "model.pt").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(CheckpointError, match=r"model\.pt is a pickle file; rnnkit never unpickles"):
        checkpoint.load(tmp_path / "model.pt")
    checkpoint.save(tmp_path / "run" / "last", small_checkpoint())
    with pytest.raises(CheckpointError, match=r"looks like a run directory: load .*last"):
        checkpoint.load(tmp_path / "run")


# ------------------------------------------------------------------------------------- resolve


def test_resolve_finds_the_checkpoint_of_a_run(tmp_path):
    run = tmp_path / "run"
    last = checkpoint.save(run / "last", small_checkpoint())
    assert checkpoint.resolve(run) == last
    best = checkpoint.save(run / "best", small_checkpoint())
    assert checkpoint.resolve(run) == best
    assert checkpoint.resolve(last) == last
    assert checkpoint.resolve(str(best)) == best


def test_resolve_explains_what_it_expected(tmp_path):
    with pytest.raises(CheckpointError, match=r"neither a checkpoint directory .* nor a run directory .*it is empty"):
        checkpoint.resolve(tmp_path)
    with pytest.raises(CheckpointError, match=r"does not exist; expected a checkpoint directory"):
        checkpoint.resolve(tmp_path / "nowhere")


def test_all_finite_names_the_non_finite_floating_tensors():
    tensors = {
        "ok": torch.zeros(3),
        "nan": torch.tensor([0.0, float("nan")]),
        "ints": torch.arange(3),
        "bf16_inf": torch.tensor([float("inf")], dtype=torch.bfloat16),
    }
    assert checkpoint.all_finite(tensors) == ["nan", "bf16_inf"]
