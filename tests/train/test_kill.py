"""Crash safety: training killed with SIGKILL at random moments, resumed each time, ends bit-identical.

A run of ``rnnkit lm train`` (two dropout-regularized LSTM layers, so the RNG states matter, a
checkpoint after every step) is killed again and again at seeded random moments: during start-up
and resume, in the middle of a step, in the middle of writing a checkpoint. After each kill every
checkpoint directory on disk must load, and ``--resume`` continues the run; at the end every byte
of the final checkpoint's tensors (model, optimizer, RNG states, carried TBPTT state) equals an
uninterrupted run's, and metrics.jsonl reads as that run's (same loss, lr and gradient norm at
every step).

The fast variant forks each run from a fork server that has imported rnnkit (no interpreter start-up,
a few seconds in all); the slow one starts ``python -m rnnkit`` as a user does, and kills it at least 20 times.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from rnnkit.data import bundled_text
from rnnkit.train import checkpoint
from rnnkit.train.report import read_metrics


def train_argv(data: Path, out: Path, steps: int, resume: bool) -> list[str]:
    return ["lm", "train", "--data", str(data), "--out", str(out), "--steps", str(steps), "--seed", "3",
            "--hidden-size", "16", "--embedding-size", "8", "--num-layers", "2", "--dropout", "0.1",
            "--zoneout", "0.1", "--batch-size", "4", "--bptt", "16", "--warmup-steps", "5",
            "--checkpoint-every", "1", "--eval-every", str(max(1, steps // 2)), "--log-every", "1",
            "--no-progress"] + (["--resume"] if resume else [])


def _cli(argv: list[str]) -> None:
    from rnnkit.cli import main

    sys.exit(main(argv))


def _forkserver() -> multiprocessing.context.BaseContext:
    """A fork server that has imported rnnkit's CLI: each run forks from it. Not a fork of the test process
    itself: that one has run other tests' threads (torch's pool, a task's prefetch thread), and a fork taken
    while another thread holds a lock deadlocks the child (it hung in a futex here once)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["rnnkit.cli", "rnnkit.plots"])
    return context


class Forked:
    """``rnnkit.cli.main(argv)`` in a process forked from a fork server that has imported rnnkit: no start-up
    cost per run."""

    startup_s = 0.3

    def __init__(self, argv: list[str]) -> None:
        self.process = _forkserver().Process(target=_cli, args=(argv,))
        self.process.start()
        self.pid = self.process.pid

    def poll(self) -> int | None:
        return self.process.exitcode

    def wait(self) -> int:
        self.process.join()
        return self.process.exitcode


class Started:
    """``python -m rnnkit argv`` in a new interpreter, as a user runs it."""

    startup_s = 4.0

    def __init__(self, argv: list[str]) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "rnnkit", *argv], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.pid = self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self) -> int:
        _, err = self.process.communicate()
        if self.process.returncode:
            print(err.decode(errors="replace"), file=sys.stderr)
        return self.process.returncode


def saved_step(out: Path) -> int:
    """The step of ``out/last`` (-1 before the first checkpoint)."""
    try:
        return int(json.loads((out / "last" / checkpoint.TRAINER).read_text())["step"])
    except (OSError, ValueError, KeyError):
        return -1


def has_checkpoint(out: Path) -> bool:
    """``out/last`` exists, or the complete ``.last.old-PID`` that a kill between a save's two renames left."""
    return (out / "last").exists() or any(p.name.startswith(".last.old-") for p in out.glob(".last.old-*"))


def assert_every_checkpoint_loads(out: Path, after: str) -> None:
    """Each checkpoint directory on disk (last/, best/, and what an interrupted save left) loads.

    ``.NAME.tmp-PID`` directories are a save that never finished: by design nothing reads them.
    """
    if not out.exists():  # killed before it made the run directory
        return
    names = ("last", "best")
    dirs = [p for p in out.iterdir() if p.name in names or p.name.startswith(tuple(f".{n}.old-" for n in names))]
    for d in dirs:
        try:
            checkpoint.load(d)
        except checkpoint.CheckpointError as e:  # pragma: no cover - the failure being tested for
            pytest.fail(f"after {after}: {d} does not load: {e}")
    if has_checkpoint(out):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a recovered .old-PID warns
            checkpoint.load(out / "last")


def kill_and_resume(runner, data: Path, out: Path, steps: int, kills: int, seed: int) -> int:
    """Train into ``out``, SIGKILLing the run ``kills`` times at seeded random moments, then let it finish.

    Most kills come a random 0-100 ms after the run has written a new checkpoint (so that each run
    makes progress, and kills land mid-step and mid-save); one in four comes at a random moment of
    the start-up (while the checkpoint is read for the resume). Returns the kills done.
    """
    rng = random.Random(seed)
    done = 0
    while done < kills:
        before = saved_step(out)
        run = runner(train_argv(data, out, steps, resume=has_checkpoint(out)))
        if rng.random() < 0.25:
            deadline = time.monotonic() + rng.uniform(0, runner.startup_s)
            while time.monotonic() < deadline and run.poll() is None:
                time.sleep(0.005)
        else:
            while saved_step(out) <= before and run.poll() is None:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.1))
        if run.poll() is not None:
            assert run.wait() == 0, f"the run failed after {done} kills (see stderr)"
            pytest.fail(f"the run finished after only {done} of {kills} kills: give it more steps")
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        done += 1
        assert_every_checkpoint_loads(out, f"kill {done} (the checkpoint was at step {saved_step(out)})")
    final = runner(train_argv(data, out, steps, resume=has_checkpoint(out)))
    assert final.wait() == 0, "the last resume failed (see stderr)"
    return done


def tensors_of(ckpt: checkpoint.Checkpoint) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint by a name that says where it is."""
    optimizer = ckpt.optimizer or {}
    out = {f"model.{k}": v for k, v in ckpt.model.items()}
    out.update({f"optimizer.state.{i}.{k}": v for i, state in optimizer.get("state", {}).items()
                for k, v in state.items() if isinstance(v, torch.Tensor)})
    out.update({f"trainer.{k}": v for k, v in ckpt.trainer_tensors.items()})
    return out


def raw(t: torch.Tensor) -> tuple:
    return t.dtype, tuple(t.shape), t.reshape(-1).view(torch.uint8).numpy().tobytes()


def assert_same_run(reference: Path, resumed: Path) -> None:
    """Every tensor of last/ and best/ byte for byte, and the JSON state but for the wall-clock time.

    (The files themselves are not compared: safetensors writes its header's metadata in a hash map's
    order, which differs from one process to the next.)
    """
    for sub in ("last", "best"):
        a, b = checkpoint.load(reference / sub), checkpoint.load(resumed / sub)
        tensors_a, tensors_b = tensors_of(a), tensors_of(b)
        assert list(tensors_a) == list(tensors_b), f"{sub}: the checkpoints hold different tensors"
        different = [name for name in tensors_a if raw(tensors_a[name]) != raw(tensors_b[name])]
        assert not different, f"{sub}: {', '.join(different)} differ from the uninterrupted run's"
        assert a.optimizer["param_groups"] == b.optimizer["param_groups"], f"{sub}: optimizer settings differ"
        for state in (a.trainer, b.trainer):
            state.pop("elapsed_s")  # wall-clock time: the only thing a kill may change
        assert a.trainer == b.trainer, f"{sub}/trainer.json differs from the uninterrupted run's"
        assert a.config == b.config and a.vocab == b.vocab, f"{sub}: config.json or vocab.json differs"

    def history(run: Path) -> list[tuple]:
        return [(r["step"], r["loss"], r["lr"], r["grad_norm"]) if "loss" in r else (r["step"], r["eval"])
                for r in read_metrics(run / "metrics.jsonl") if "loss" in r or "eval" in r]  # not stop events

    assert history(reference) == history(resumed), "metrics.jsonl does not read as the uninterrupted run"


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    from rnnkit import cli, plots  # imported once here, so that each forked run starts at once

    cli.build_parser()
    plots.loss_curve  # noqa: B018
    path = tmp_path_factory.mktemp("text") / "plays.txt"
    path.write_text(bundled_text()[:20_000])
    return path


def test_sigkill_at_random_moments_then_resume_is_bit_identical(text_file, tmp_path):
    steps = 20
    assert Forked(train_argv(text_file, tmp_path / "straight", steps, resume=False)).wait() == 0
    kills = kill_and_resume(Forked, text_file, tmp_path / "killed", steps, kills=4, seed=0)
    assert kills == 4
    assert_same_run(tmp_path / "straight", tmp_path / "killed")


@pytest.mark.slow
def test_twenty_sigkills_of_the_cli_then_resume_is_bit_identical(text_file, tmp_path):
    steps = 150
    assert Started(train_argv(text_file, tmp_path / "straight", steps, resume=False)).wait() == 0
    kills = kill_and_resume(Started, text_file, tmp_path / "killed", steps, kills=24, seed=1)
    assert kills >= 20
    assert_same_run(tmp_path / "straight", tmp_path / "killed")


def small_lm(text_file: Path):
    from rnnkit.tasks.lm import LMConfig, LMTask, build_corpus
    from rnnkit.train.trainer import seed_everything

    config = LMConfig(data=str(text_file), hidden_size=16, embedding_size=8, num_layers=2, dropout=0.1,
                      zoneout=0.1, batch_size=4, bptt=16)
    seed_everything(0)
    return LMTask(config, build_corpus(config), 0, torch.device("cpu"))


def quick_config():
    from rnnkit.train.trainer import TrainConfig

    return TrainConfig(steps=6, log_every=1, eval_every=3, checkpoint_every=1, warmup_steps=2)


def test_a_kill_between_the_two_renames_of_a_save_is_resumed(text_file, tmp_path):
    """The one moment with no last/: it was renamed to .last.old-PID and the new one not yet in place."""
    from rnnkit.train.trainer import Trainer

    Trainer(small_lm(text_file), quick_config(), tmp_path / "straight", progress=False).fit()
    out = tmp_path / "killed"
    # until=3, a step with an evaluation: a stop elsewhere evaluates there too, which an uninterrupted run does not
    Trainer(small_lm(text_file), quick_config(), out, progress=False).fit(until=3)
    os.rename(out / "last", out / ".last.old-4242")
    with pytest.warns(UserWarning, match="interrupted save"):
        assert checkpoint.load(out / "last").trainer["step"] == 3  # readers use it where it is
    with pytest.raises(FileExistsError, match="--resume"):  # a fresh run does not overwrite it
        Trainer(small_lm(text_file), quick_config(), out, progress=False)
    Trainer(small_lm(text_file), quick_config(), out, resume=True, progress=False).fit()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["best", "last", "plots"]
    assert_same_run(tmp_path / "straight", out)


def test_a_run_killed_before_its_first_checkpoint_starts_over(text_file, tmp_path):
    """Without --resume (there is nothing to resume) the new run's metrics.jsonl replaces the dead one's."""
    from rnnkit.train.trainer import Trainer

    Trainer(small_lm(text_file), quick_config(), tmp_path / "straight", progress=False).fit()
    out = tmp_path / "killed"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 99.0, "lr": 0.1, "grad_norm": 1.0}\n{"step": 2, "lo')
    with pytest.raises(FileNotFoundError, match="no last/ checkpoint"):
        Trainer(small_lm(text_file), quick_config(), out, resume=True, progress=False)
    Trainer(small_lm(text_file), quick_config(), out, progress=False).fit()
    assert_same_run(tmp_path / "straight", out)


def test_checkpoint_minutes_writes_last_by_the_clock(text_file, tmp_path, monkeypatch):
    """--checkpoint-minutes M: last/ whenever M minutes have passed, whatever --checkpoint-every says."""
    from rnnkit.train.trainer import TrainConfig, Trainer

    def saves(minutes, out):
        clock = iter(range(0, 10_000, 50))  # each reading of the clock is 50 s after the last
        run = Trainer(small_lm(text_file), TrainConfig(steps=6, checkpoint_every=1000, checkpoint_minutes=minutes,
                                                       eval_every=1000, log_every=1000, warmup_steps=1),
                      out, progress=False, clock=lambda: float(next(clock)))
        saved = []
        original = run._save
        monkeypatch.setattr(run, "_save", lambda name, elapsed: (saved.append((name, run.state.step)),
                                                                  original(name, elapsed)))
        run.fit()
        assert saved[-1] == ("last", 6)  # the end of the run
        return [step for name, step in saved[:-1] if name == "last"]

    assert saves(None, tmp_path / "a") == []  # only the end of the run
    assert saves(1.5, tmp_path / "b") == [1, 2, 3, 4, 5, 6]  # > 90 s of (fake) clock pass in every step
    with pytest.raises(ValueError, match="checkpoint_minutes must be > 0"):
        TrainConfig(steps=1, checkpoint_minutes=0).validate()
