"""minGRU: the log-space scan backend against the reference time loop, in the same run, as ratios.

Follows design section 7 and ``rnnkit bench`` (whose helpers it uses): the thread count is fixed (``--threads``,
2 by default), every function is called once before it is timed, each measurement is
``torch.utils.benchmark.Timer(..., num_threads=torch.get_num_threads()).blocked_autorange``, and
the backends alternate in interleaved rounds (``--rounds``, 3 by default, at least 3), the order
rotating each round. A row's ratio is the median of its per-round ratios, backend / reference:
below 1 the backend is faster than the loop. Times are medians over rounds; on a shared machine
the ratio holds, the absolute time does not.

Rows, per shape (B, T, I, H), time-major input, one layer, one direction, fp32, ``mingru``:
  scan   rnnkit.Recurrent("mingru", backend="scan")    vs backend="reference"
  fused  the same with backend="fused": the sequential fused kernel (fused/minimal.py)

"inference" is a forward under ``torch.no_grad`` in eval mode; "training" is forward plus
``out.sum().backward()`` with the input requiring grad. Before timing, each backend's output
is checked against the reference loop's (the float32 scan drifts with T, see backends/scan.py).

    .venv/bin/python benchmarks/scan.py               # the four default shapes, ~3 minutes on 2 cores
    .venv/bin/python benchmarks/scan.py --shape 32,100,128,256 --cell minlstm
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import Tensor

import rnnkit
from rnnkit import backends
from rnnkit.backends import Problem, scan
from rnnkit.bench import OtherLoad, cpu_model_and_flags, measure, parse_shape
from rnnkit.bench import layer_workload as workload

SHAPES = [(32, 100, 128, 256), (16, 512, 128, 1024), (1, 1000, 64, 256), (8, 4096, 64, 256)]  # (B, T, I, H)
MIN_RUN_TIME = 0.3  # seconds per measurement


def candidates(cell: str, shape: tuple[int, int, int, int], device: str) -> list[str]:
    """The backends to time against the reference loop: scan, and fused where it runs the cell."""
    B, T, _, _ = shape
    problem = Problem(cell, (), device, torch.float32, B, T, True)
    return [
        name
        for name in ("scan", "fused")
        if name in backends.BACKENDS and backends.BACKENDS[name].supports(problem) is None
    ]


def check_close(name: str, expected: Tensor, got: Tensor, T: int) -> None:
    # the float32 scan's error grows as eps * |sum of log a| ~ eps * T (backends/scan.py)
    tol = 1e-4 + 1e-6 * T
    worst = float((expected - got).abs().max() / expected.abs().max())
    if worst > tol:
        raise SystemExit(
            f"backend {name!r} differs from the reference loop by {worst:.2e} (relative) "
            f"> {tol:.1e} before timing; refusing to report its speed"
        )


def compare(cell: str, shape, mode: str, args) -> list[dict]:
    B, T, I, H = shape
    torch.manual_seed(0)
    names = ["reference", *candidates(cell, shape, args.device)]
    layers = {name: rnnkit.Recurrent(cell, I, H, backend=name, device=args.device) for name in names}
    for layer in layers.values():
        layer.load_state_dict(layers["reference"].state_dict())
    x = torch.randn(T, B, I, device=args.device)  # (T, B, I)
    with torch.no_grad():
        expected = layers["reference"](x)[0]
        for name in names[1:]:
            check_close(name, expected, layers[name](x)[0], T)
    fns = {name: workload(layer, x, mode) for name, layer in layers.items()}
    for fn in fns.values():  # warm-up
        fn()
    for name, layer in layers.items():
        if layer.last_backend != name:
            raise SystemExit(f"asked for backend {name!r}, ran {layer.last_backend!r}")

    load = OtherLoad()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name].append(measure(fns[name], args.min_run_time))
    median = statistics.median
    rows = []
    for name in names[1:]:
        ratios = [c / b for c, b in zip(times[name], times["reference"])]
        rows.append(
            {
                "cell": cell,
                "backend": name,
                "mode": mode,
                "shape": shape,
                "ms": median(times[name]) * 1e3,
                "ref_ms": median(times["reference"]) * 1e3,
                "ratio": median(ratios),
                "range": (min(ratios), max(ratios)),
                "others": load.cores(),
            }
        )
    return rows


COLUMNS = ["cell", "backend", "mode", "B,T,I,H", "backend ms", "reference ms", "ratio", "ratio range"]


def cells_of(row: dict) -> list[str]:
    return [
        row["cell"],
        row["backend"],
        row["mode"],
        ",".join(map(str, row["shape"])),
        f"{row['ms']:.2f}",
        f"{row['ref_ms']:.2f}",
        f"{row['ratio']:.2f}",
        f"{row['range'][0]:.2f}-{row['range'][1]:.2f}",
    ]


def markdown(rows: list[dict]) -> str:
    numeric = {"backend ms", "reference ms", "ratio", "ratio range"}
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---:" if c in numeric else "---" for c in COLUMNS) + "|",
    ]
    return "\n".join(lines + ["| " + " | ".join(cells_of(r)) + " |" for r in rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, at least 3 (default 3)")
    parser.add_argument(
        "--min-run-time", type=float, default=MIN_RUN_TIME, help=f"seconds per measurement (default {MIN_RUN_TIME})"
    )
    parser.add_argument("--cell", default="mingru", choices=sorted(scan.LOG_COEFFICIENTS))
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: Timer synchronizes CUDA")
    parser.add_argument(
        "--shape",
        action="append",
        type=parse_shape,
        default=None,
        metavar="B,T,I,H",
        help="a shape to run instead of the defaults; repeat for several",
    )
    args = parser.parse_args(argv)
    if args.rounds < 3:
        parser.error(f"--rounds must be at least 3, got {args.rounds}")
    torch.set_num_threads(args.threads)
    model, flags = cpu_model_and_flags()
    if args.device.startswith("cuda"):
        model = f"{torch.cuda.get_device_name(args.device)}, host {model}"
    print(
        f"torch {torch.__version__} | CPU: {model} ({' '.join(flags)}) | capability: "
        f"{torch.backends.cpu.get_cpu_capability()} | threads: {torch.get_num_threads()} | "
        f"rounds: {args.rounds} | min_run_time: {args.min_run_time:g} s | fp32 | ratio = backend / reference "
        f"(< 1: faster than the loop)\n",
        flush=True,
    )
    start, load = time.perf_counter(), OtherLoad()
    rows = []
    for shape in args.shape or SHAPES:
        for mode in ("inference", "training"):
            for row in compare(args.cell, shape, mode, args):
                rows.append(row)
                others = "" if row["others"] is None else f"  (others: {row['others']:.2f} cores)"
                print("  " + " ".join(cells_of(row)) + others, file=sys.stderr, flush=True)
    print(markdown(rows))
    cores = load.cores()
    busy = "" if cores is None else f" Other processes kept {cores:.2f} cores busy on average."
    print(f"\nRun time {time.perf_counter() - start:.0f} s.{busy}")


if __name__ == "__main__":
    main()
