"""Training on several processes: two CPU ranks (gloo, loopback) against one process.

Two ranks with half a batch each must end with the weights of one process with the whole batch
(DDP averages the gradients; the tiny task below carries its LSTM state across batches, so the
per-rank carried state is exercised too, through a checkpoint and a resume), and only rank 0 may
write into the run directory.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch import Tensor, nn

import rnnkit
from rnnkit.train import distributed
from rnnkit.train.trainer import TrainConfig, Trainer, seed_everything
from tests.helpers import assert_close

BATCH = 4  # the global batch: 2 per rank
STEPS = 6
WORLD = 2
TOL = 1e-9  # float64: the ranks' gradients are averaged in another order than one batch's


class Batch(NamedTuple):
    x: Tensor  # (T, B, 3)
    y: Tensor  # (B,)


class Stream:
    """Batch k is drawn from a generator seeded by (seed, k): the position is the whole state."""

    def __init__(self, seed: int) -> None:
        self.seed, self.pos = seed, 0

    def next(self) -> Batch:
        generator = torch.Generator().manual_seed(self.seed * 1_000 + self.pos)
        self.pos += 1
        x = torch.randn(5, BATCH, 3, generator=generator, dtype=torch.float64)
        return Batch(x, x.sum(dim=(0, 2)).tanh())

    def state(self):
        return {"pos": self.pos, "seed": self.seed}, {}

    def load_state(self, meta, tensors):
        self.pos, self.seed = meta["pos"], meta["seed"]


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = rnnkit.LSTM(3, 6, backend="reference").double()
        self.head = nn.Linear(6, 1).double()

    def forward(self, x: Tensor, state):
        out, state = self.rnn(x, state)  # (T, B, 6)
        return self.head(out[-1]).squeeze(-1), state  # (B,)


class CarryTask:
    """A regression whose LSTM state runs on from batch to batch (truncated BPTT, as lm's)."""

    name = "carry"
    metric = "loss"
    higher_is_better = False

    def __init__(self, seed: int = 0) -> None:
        seed_everything(seed)
        self.model = Regressor()
        self.stream = Stream(seed)
        self.held_out = Stream(seed + 1).next()
        self.seen: list[list[float]] = []  # the targets of each batch trained on

    def loss(self, batch: Batch, carry):
        self.seen.append(batch.y.tolist())
        prediction, state = self.model(batch.x, carry)
        return ((prediction - batch.y) ** 2).mean(), state, batch.x.shape[0] * batch.x.shape[1]

    def shard(self, batch: Batch, rank: int, world_size: int) -> Batch:
        return Batch(distributed.split_batch(batch.x, rank, world_size, dim=1),
                     distributed.split_batch(batch.y, rank, world_size, dim=0))

    def evaluate(self) -> dict:
        prediction, _ = self.model(self.held_out.x, None)
        return {"loss": float(((prediction - self.held_out.y) ** 2).mean())}

    def describe(self):
        return {"hidden_size": 6}, None


def config(**overrides) -> TrainConfig:
    settings = {"steps": STEPS, "log_every": 1, "eval_every": 3, "checkpoint_every": 3, "warmup_steps": 1,
                "lr": 1e-2}
    return TrainConfig(**{**settings, **overrides})


WRITES = ("open", "os.mkdir", "os.rename", "os.replace", "os.remove", "os.unlink", "os.rmdir", "shutil.rmtree")


def _worker(rank: int, port: int, tmp: str) -> None:
    """One rank: a straight run, then a run stopped at step 3 and resumed; records what it wrote."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    runs = str(Path(tmp) / "runs")
    written = []

    def audit(event, args):  # every file this process creates, opens for writing, renames or removes
        if event in WRITES and args and str(args[0]).startswith(runs):
            if event != "open" or (len(args) > 1 and args[1] is not None and set(str(args[1])) & set("wax+")):
                written.append(f"{event} {args[0]}")

    sys.addaudithook(audit)
    try:
        straight = CarryTask()
        Trainer(straight, config(), Path(runs) / "straight", progress=False).fit()
        Trainer(CarryTask(), config(), Path(runs) / "resumed", progress=False).fit(until=3)
        resumed = Trainer(CarryTask(), config(), Path(runs) / "resumed", resume=True, progress=False)
        resumed.fit()
        weights = {k: v.tolist() for k, v in resumed.model.state_dict().items()}
    finally:
        distributed.cleanup()
    (Path(tmp) / f"rank{rank}.json").write_text(json.dumps({"written": written, "weights": weights,
                                                                  "seen": straight.seen}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(tmp)), nprocs=WORLD, join=True)
    return tmp


def test_two_ranks_with_half_batches_give_the_weights_of_one_process(two_ranks, tmp_path):
    single = Trainer(CarryTask(), config(), tmp_path, progress=False)
    single.fit()
    expected = single.model.state_dict()
    for run in ("straight", "resumed"):  # resumed: stopped at step 3, each rank's carried state restored
        written = load_file(two_ranks / "runs" / run / "last" / "model.safetensors")
        for name, value in expected.items():
            assert_close(f"{run} run, {name}", value, written[name], TOL)
    rank1 = json.loads((two_ranks / "rank1.json").read_text())["weights"]
    for name, value in expected.items():  # the rank that wrote nothing holds the same weights
        assert_close(f"rank 1's {name}", value, torch.tensor(rank1[name], dtype=value.dtype), TOL)


def test_each_rank_trains_on_its_half_of_every_batch(two_ranks):
    halves = [json.loads((two_ranks / f"rank{r}.json").read_text())["seen"] for r in range(WORLD)]
    stream = Stream(0)
    for step in range(STEPS):
        y = stream.next().y.tolist()
        assert halves[0][step] == y[: BATCH // 2] and halves[1][step] == y[BATCH // 2 :], step


def test_only_rank_0_writes_and_its_run_directory_is_a_normal_one(two_ranks, tmp_path):
    rank0 = json.loads((two_ranks / "rank0.json").read_text())["written"]
    rank1 = json.loads((two_ranks / "rank1.json").read_text())["written"]
    assert any(w.endswith("metrics.jsonl") for w in rank0), rank0  # the audit sees rank 0's writes
    assert rank1 == [], f"rank 1 wrote: {rank1[:5]}"
    Trainer(CarryTask(), config(), tmp_path / "single", progress=False).fit()
    for run in ("straight", "resumed"):
        files = sorted(str(p.relative_to(two_ranks / "runs" / run)) for p in (two_ranks / "runs" / run).rglob("*"))
        single = sorted(str(p.relative_to(tmp_path / "single")) for p in (tmp_path / "single").rglob("*"))
        assert files == single, run
    losses = [r["loss"] for r in map(json.loads, (two_ranks / "runs" / "straight" / "metrics.jsonl").open())
              if "loss" in r]
    single_losses = [r["loss"] for r in map(json.loads, (tmp_path / "single" / "metrics.jsonl").open()) if "loss" in r]
    assert losses == pytest.approx(single_losses, rel=1e-9)  # the global mean, not rank 0's half


def test_a_batch_that_does_not_divide_between_the_ranks_is_a_clear_error():
    with pytest.raises(ValueError, match="5 examples .* does not divide between 2 processes"):
        distributed.split_batch(torch.zeros(3, 5), 0, 2, dim=1)


def test_torchrun_environment_is_read_and_checked(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.from_env() == distributed.Group(1, 4, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4 and WORLD_SIZE=4"):
        distributed.from_env()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer"):
        distributed.from_env()
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    assert distributed.backend_for(torch.device("cuda", 0)) == "nccl"


def test_the_cli_under_torchrun_needs_out(monkeypatch):
    from rnnkit import cli

    monkeypatch.setattr(distributed, "setup", lambda device: distributed.Group(0, 2))
    with pytest.raises(ValueError, match="--out is needed under torchrun"):
        with cli.processes(argparse.Namespace(out=None), "cpu"):
            pass


@pytest.mark.slow
def test_torchrun_runs_a_task_command_and_resumes_it(tmp_path):
    data = tmp_path / "tiny.tsv"
    rows = [f"{'good fine great' if i % 2 else 'bad poor awful'} film {i}\t{'pos' if i % 2 else 'neg'}"
            for i in range(64)]
    data.write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for steps, resume in ((4, []), (6, ["--resume"])):
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                   "127.0.0.1", "--master-port", str(_free_port()), "-m", "rnnkit", "classify", "train",
                   "--data", str(data), "--batch-size", "8", "--hidden-size", "8", "--steps", str(steps),
                   "--eval-every", "2", "--checkpoint-every", "2", "--log-every", "1", "--out", str(out),
                   "--no-progress", *resume]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.count("macro-F1") == 1, result.stdout  # the test report, from rank 0 only
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert (out / "test.json").exists() and (out / "plots" / "loss.png").exists()
