"""The triton backend on a CUDA device, against the reference loop on the same device.

The GPU half of tests/test_triton.py (which runs the same kernels on the CPU through Triton's
interpreter). It reuses scripts/check_cuda.py's comparison: outputs, final states and the
gradients of the input, the initial state and every parameter, for every cell the triton backend
runs x layers x directions x lengths:

- float64, within 1e-10 (as the CPU tests);
- float32 with TF32 off (cuBLAS would otherwise round the GEMMs to a 10-bit mantissa), within
  1e-5 of each tensor's largest entry;
- bfloat16 autocast: output within 5e-2 of float32, gradients float32 and finite.

Cases of the same shape replay the CUDA graph the first one captured, so the grid also checks
that a replay reads the new weights and inputs.

    PYTHONPATH=src python scripts/check_triton_cuda.py [--device cuda]
    TRITON_INTERPRET=1 PYTHONPATH=src python scripts/check_triton_cuda.py --device cpu --quick   # the script itself

Prints one line per group and the worst difference; exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import check_cuda  # noqa: E402  (scripts/check_cuda.py: compare, group, grid, cases, the TF32 switch)

import rnnkit  # noqa: E402
from rnnkit.backends import triton as triton_backend  # noqa: E402


def bf16_check(device: str, quick: bool) -> list[tuple[str, float, None]]:
    out = []
    for case in check_cuda.cases(triton_backend.KERNELS)[: 3 if quick else None]:
        _, cell, options, proj_size = case
        torch.manual_seed(0)
        layer = rnnkit.Recurrent(cell, check_cuda.I, check_cuda.H, num_layers=2, proj_size=proj_size,
                                 backend="triton", device=device, **options)
        x = torch.randn(check_cuda.T, check_cuda.B, check_cuda.I, device=device)
        expected, _ = layer(x, lengths=check_cuda.LENGTHS)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            got, _ = layer(x, lengths=check_cuda.LENGTHS)
            got.float().sum().backward()
        ok = layer.last_backend == "triton" and all(
            p.grad.dtype == torch.float32 and bool(torch.isfinite(p.grad).all()) for p in layer.parameters())
        diff = float((expected - got.float()).abs().max().detach())
        out.append((case[0], diff if ok else float("nan"), None))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="the first few cases of each group only")
    args = parser.parse_args()
    import triton

    device = args.device
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU (triton interpreter)"
    print(f"torch {torch.__version__} | triton {triton.__version__} | {name}", flush=True)
    grid = list(check_cuda.grid(triton_backend.KERNELS))[: 6 if args.quick else None]
    ok = True
    results = [(i, *check_cuda.compare("triton", c, L, d, n, device)) for c, L, d, n, i in grid]
    ok &= check_cuda.group("triton == reference, float64", results, check_cuda.TOL)
    with check_cuda._tf32_off():
        results = [(i, check_cuda.compare("triton", c, L, d, n, device, dtype=torch.float32, relative=True)[0], None)
                   for c, L, d, n, i in grid]
    ok &= check_cuda.group("triton == reference, float32 with TF32 off, relative", results, 1e-5)
    ok &= check_cuda.group("bfloat16 autocast triton vs float32", bf16_check(device, args.quick), 5e-2)
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
