"""torch.compile on an rnnkit LSTM and GRU layer: compile time and speed against eager, on the CPU.

For each cell, one layer, one direction, fp32, time-major input of shape (T, B, I), hidden H:

  eager      rnnkit.Recurrent(cell, I, H, backend=BACKEND), called as is
  compiled   torch.compile(the same module) (inductor, the default backend, ``mode`` as given)

"compile s" is the wall time of the first compiled call minus one eager call: tracing plus code
generation plus the C++ build, from a fresh inductor cache (a temporary directory), so no earlier
run hides it. Speed is then measured as in ``benchmarks/scan.py``: the thread count is fixed
(``--threads``, 1 by default: the machine is shared), each function runs once before it is timed,
each measurement is ``torch.utils.benchmark.Timer(...).blocked_autorange``, and eager and compiled
alternate over ``--rounds`` rounds; a ratio is the median of the per-round ratios, compiled / eager
(below 1: compiled is faster). Before timing, the compiled outputs are checked against eager's.

"inference" is a forward under ``torch.no_grad`` in eval mode; "training" is forward plus
``out.sum().backward()`` with the input requiring grad.

    .venv/bin/python benchmarks/compile.py                       # LSTM and GRU, T=32 B=16 I=64 H=128
    .venv/bin/python benchmarks/compile.py --backend native --cells lstm --shape 64,32,64,128
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

# a fresh inductor cache, before torch reads the setting: the compile time includes the C++ build
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="rnnkit-compile-bench-")

import torch  # noqa: E402
from torch.utils import benchmark  # noqa: E402

import rnnkit  # noqa: E402


def measure(fn, threads: int, min_run_time: float) -> float:
    """Median seconds per call."""
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=min_run_time).median


def run_case(cell: str, backend: str, shape: tuple[int, int, int, int], mode: str, threads: int, rounds: int,
             min_run_time: float) -> list[dict]:
    T, B, I, H = shape
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell, I, H, backend=backend)
    compiled = torch.compile(layer, mode=mode)
    x = torch.randn(T, B, I)
    rows = []
    for kind in ("inference", "training"):
        def call(model, kind=kind):
            if kind == "inference":
                layer.eval()
                with torch.no_grad():
                    return model(x)[0]
            layer.train()
            x_ = x.clone().requires_grad_()
            out = model(x_)[0]
            out.sum().backward()
            return out

        t0 = time.perf_counter()
        expected = call(layer)
        eager_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = call(compiled)
        compile_s = time.perf_counter() - t0 - eager_first
        worst = float((got.detach() - expected.detach()).abs().max())
        if worst > 1e-4:
            sys.exit(f"{cell} {kind}: compiled output differs from eager by {worst:.2e} (> 1e-4); not timing it")
        eager_times, compiled_times, ratios = [], [], []
        for r in range(rounds):
            order = [("eager", layer), ("compiled", compiled)][:: 1 if r % 2 == 0 else -1]
            times = {name: measure(lambda m=model: call(m), threads, min_run_time) for name, model in order}
            eager_times.append(times["eager"])
            compiled_times.append(times["compiled"])
            ratios.append(times["compiled"] / times["eager"])
        rows.append({"cell": cell, "kind": kind, "compile_s": compile_s,
                     "eager_ms": statistics.median(eager_times) * 1e3,
                     "compiled_ms": statistics.median(compiled_times) * 1e3, "ratio": statistics.median(ratios),
                     "max_diff": worst})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru"], help="rnnkit cells to measure")
    parser.add_argument("--backend", default="reference", help="the layer's backend: reference (the Python time "
                                                                "loop, which inductor can fuse) or native")
    parser.add_argument("--shape", default="32,16,64,128", help="T,B,I,H")
    parser.add_argument("--mode", default="default", help="torch.compile mode (default, reduce-overhead, ...)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads")
    parser.add_argument("--rounds", type=int, default=3, help="alternating eager/compiled rounds (at least 3)")
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per blocked_autorange")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    if len(shape) != 4:
        parser.error(f"--shape must be T,B,I,H (four integers), got {args.shape!r}")
    if args.rounds < 3:
        parser.error(f"--rounds must be at least 3, got {args.rounds}")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), backend={args.backend}, mode={args.mode}, "
          f"T,B,I,H={args.shape}, fp32, one layer")
    print(f"{'cell':5} {'kind':9} {'compile s':>9} {'eager ms':>9} {'compiled ms':>11} {'ratio':>6} {'max diff':>9}")
    for cell in args.cells:
        for row in run_case(cell, args.backend, shape, args.mode, args.threads, args.rounds, args.min_run_time):
            print(f"{row['cell']:5} {row['kind']:9} {row['compile_s']:9.1f} {row['eager_ms']:9.3f} "
                  f"{row['compiled_ms']:11.3f} {row['ratio']:6.2f} {row['max_diff']:9.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
