"""Soak run: train for a long time with a checkpoint every minute and watch memory and file handles.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/soak.py --minutes 30 --out runs/soak

It trains a character language model (``rnnkit lm train`` on the bundled Shakespeare, a small
LSTM) in a child process, the way a user runs it, with ``--checkpoint-minutes 1`` (a checkpoint
whenever a minute has passed) and an evaluation every ``--eval-every`` steps, stops it with Ctrl-C
(SIGINT) after ``--minutes`` (it then writes its last checkpoint and exits), and every
``--interval`` seconds samples that process's resident memory (``VmRSS`` of /proc/PID/status)
and its open file descriptors (the entries of /proc/PID/fd), plus the checkpoint in ``last/``
(its step).

It writes ``OUT/soak.csv`` (one row per sample) and ``OUT/soak.json`` (the summary: first, last
and maximum RSS and descriptor counts, the RSS growth over the second half of the run, the
checkpoints seen and their spacing) and prints the summary. Exit status 1 if the training
failed. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

MODEL_FLAGS = ["--hidden-size", "128", "--embedding-size", "32", "--batch-size", "16", "--bptt", "64"]


def rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB, or None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def open_fds(pid: int) -> list[str]:
    """What ``pid``'s open file descriptors point to (empty once it has exited)."""
    try:
        entries = os.listdir(f"/proc/{pid}/fd")
    except (FileNotFoundError, ProcessLookupError):
        return []
    targets = []
    for entry in entries:
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{entry}"))
        except OSError:  # closed between listdir and readlink
            pass
    return targets


def checkpoint_step(last: Path) -> int | None:
    try:
        return int(json.loads((last / "trainer.json").read_text())["step"])
    except (OSError, ValueError, KeyError):  # not written yet, or being replaced right now
        return None


def rnnkit_command(out: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "rnnkit", "lm", "train", "--out", str(out), "--no-progress", *MODEL_FLAGS, *flags]


def summarize(rows: list[dict], checkpoints: list[tuple[float, int]], minutes: float, every: float) -> dict:
    rss = [r["rss_mib"] for r in rows]
    fds = [r["fds"] for r in rows]
    half = rows[len(rows) // 2 :]
    # least-squares slope of RSS over the second half (after the warm-up), MiB per hour
    ts, ys = [r["t_s"] for r in half], [r["rss_mib"] for r in half]
    mt, my = sum(ts) / len(ts), sum(ys) / len(ys)
    var = sum((t - mt) ** 2 for t in ts)
    slope = 3600 * sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var if var else 0.0
    gaps = [b[0] - a[0] for a, b in zip(checkpoints, checkpoints[1:])]
    return {
        "minutes": minutes, "samples": len(rows), "checkpoint_minutes": every,
        "rss_mib": {"first": rss[0], "last": rss[-1], "max": max(rss), "min": min(rss),
                    "at_first_checkpoint": next((r["rss_mib"] for r in rows if r["checkpoint_step"] is not None),
                                                None)},
        "rss_slope_second_half_mib_per_hour": round(slope, 2),
        "fds": {"first": fds[0], "last": fds[-1], "max": max(fds), "min": min(fds)},
        "checkpoints_seen": len(checkpoints),
        "checkpoint_gap_s": {"mean": round(sum(gaps) / len(gaps), 1), "min": round(min(gaps), 1),
                             "max": round(max(gaps), 1)} if gaps else None,
        "last_step": checkpoints[-1][1] if checkpoints else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of training (default 30)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--checkpoint-minutes", type=float, default=1.0, help="minutes between checkpoints (default 1)")
    parser.add_argument("--eval-every", type=int, default=20000, help="steps between evaluations (default 20000)")
    parser.add_argument("--out", default="runs/soak", help="run directory (replaced if it exists)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.interval <= 0:
        parser.error("--minutes and --interval must be > 0")

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log = open(out / "train.log", "w")
    # no time budget (its planning fixes a step count early, and a faster machine later ends the run early): a
    # step budget out of reach, and Ctrl-C (SIGINT) when the minutes are up, after which the run writes last/
    command = rnnkit_command(out / "run", "--steps", str(10**9), "--checkpoint-every", str(10**9),
                             "--checkpoint-minutes", str(args.checkpoint_minutes), "--eval-every",
                             str(args.eval_every), "--log-every", "1000")
    print(f"soak: {' '.join(command)}", flush=True)
    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    start = time.monotonic()
    rows: list[dict] = []
    checkpoints: list[tuple[float, int]] = []
    first_fds: list[str] = []
    last_fds: list[str] = []
    with open(out / "soak.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["t_s", "rss_mib", "fds", "checkpoint_step"])
        writer.writeheader()
        interrupted = False
        while child.poll() is None:
            t = time.monotonic() - start
            if t >= 60 * args.minutes and not interrupted:
                child.send_signal(signal.SIGINT)  # the Trainer stops after this step and writes last/
                interrupted = True
            rss, fds = rss_kib(child.pid), open_fds(child.pid)
            step = checkpoint_step(out / "run" / "last")
            if step is not None and (not checkpoints or step != checkpoints[-1][1]):
                checkpoints.append((t, step))
            if rss and rss > 10 * 1024 and fds:  # below 10 MiB: the child is still exec'ing (None: gone)
                row = {"t_s": round(t, 1), "rss_mib": round(rss / 1024, 1), "fds": len(fds), "checkpoint_step": step}
                rows.append(row)
                writer.writerow(row)
                f.flush()
                first_fds = first_fds or fds
                last_fds = fds
            time.sleep(args.interval)
    log.close()
    if child.returncode != 0 or not rows:
        print(f"soak: training failed (exit {child.returncode}); see {out / 'train.log'}", file=sys.stderr)
        return 1
    summary = summarize(rows, checkpoints, args.minutes, args.checkpoint_minutes)
    summary["fd_targets_first"] = sorted(first_fds)
    summary["fd_targets_last"] = sorted(last_fds)
    summary["load_average_at_end"] = os.getloadavg()
    (out / "soak.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if not k.startswith("fd_targets")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
