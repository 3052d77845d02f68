"""ConvLSTM / ConvGRU: milliseconds per time step of ``rnnkit.ConvRecurrent`` on the CPU.

One layer, one direction, fp32, input (T, B, C, H, W), kernel k, Hc hidden channels. Per cell
and frame size it prints, per time step (the call's time divided by T):

  infer ms    forward under ``torch.no_grad``
  train ms    forward plus ``out.square().mean().backward()``
  hh conv ms  the hidden-to-hidden convolution alone (B, Hc, H, W) -> (B, G*Hc, H, W), forward: the
              floor of a step, which the per-step Python and pointwise gates sit on top of
  cpu ms      the same two per step in the process's CPU time (``time.process_time``, all threads
              together; the median of 5 runs of >= 0.4 s): on a machine busy with other work, a
              one-thread run's CPU time is close to its wall time on a quiet machine, which the
              wall-clock columns are not

Each number is the median of ``torch.utils.benchmark.Timer(...).blocked_autorange`` over
``--rounds`` rounds, with ``num_threads`` set explicitly (Timer uses ONE thread otherwise).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/conv_recurrent.py --threads 1
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/conv_recurrent.py --threads 2 --sizes 8 16
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

import rnnkit


def median_ms(stmt: str, env: dict, threads: int, rounds: int) -> float:
    times = [Timer(stmt, globals=env, num_threads=threads).blocked_autorange(min_run_time=0.3).median
             for _ in range(rounds)]
    return 1e3 * statistics.median(times)


def cpu_ms(fn) -> float:
    fn()
    runs = []
    for _ in range(5):
        cpu0, wall0, n = time.process_time(), time.perf_counter(), 0
        while time.perf_counter() - wall0 < 0.4 or n < 2:
            fn()
            n += 1
        runs.append(1e3 * (time.process_time() - cpu0) / n)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cells", nargs="+", default=["convlstm", "convgru"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[8, 16], help="frame side H = W")
    parser.add_argument("--shape", default="10,32,32,32", help="T,B,C,Hc")
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    T, B, C, Hc = (int(v) for v in args.shape.split(","))
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {args.threads}, load {os.getloadavg()[0]:.1f}, "
          f"T={T} B={B} C={C} Hc={Hc} k={args.kernel}")
    print("| cell | frame | infer ms/step | train ms/step | hh conv ms | infer cpu ms | train cpu ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for cell in args.cells:
        for side in args.sizes:
            layer = rnnkit.ConvRecurrent(cell, C, Hc, args.kernel)
            x = torch.randn(T, B, C, side, side)
            h = torch.randn(B, Hc, side, side)
            env = {"layer": layer, "x": x, "torch": torch, "F": F, "h": h, "w": layer.weight_hh_l0,
                   "b": layer.bias_hh_l0, "k": args.kernel // 2}
            infer = median_ms("with torch.no_grad(): layer(x)", env, args.threads, args.rounds) / T
            train = median_ms("layer(x)[0].square().mean().backward()", env, args.threads, args.rounds) / T
            with torch.no_grad():
                conv = median_ms("F.conv2d(h, w, b, padding=k)", env, args.threads, args.rounds)
            torch.set_num_threads(args.threads)

            def infer_call(layer=layer, x=x):
                with torch.no_grad():
                    layer(x)

            def train_call(layer=layer, x=x):
                layer(x)[0].square().mean().backward()

            infer_cpu, train_cpu = cpu_ms(infer_call) / T, cpu_ms(train_call) / T
            print(f"| {cell} | {side}x{side} | {infer:.2f} | {train:.2f} | {conv:.2f} | {infer_cpu:.2f} | "
                  f"{train_cpu:.2f} |")


if __name__ == "__main__":
    main()
