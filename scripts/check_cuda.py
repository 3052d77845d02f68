"""The fused, scan and native backends on a CUDA device, against the reference loop on the same device.

The test suite never needs a GPU; this script is the GPU half of it, run by hand on a machine that
has one (docs/results.md records its output). Every check runs in float64 and compares outputs,
final states and the gradients of the input, the initial state and every parameter:

- fused == reference for every cell the fused backend runs x layers x directions x lengths,
  without and with regularizers (hidden dropout, zoneout: the masks come from the same seed);
- scan == reference for mingru and minlstm, and at T=2000 in float32;
- native (cuDNN) == reference for the cells torch has;
- the CUDA result == the CPU reference (the device changes nothing);
- bfloat16 autocast on CUDA: output within 5e-2 of float32, gradients float32 and finite;
- which backend ``auto`` picks for each cell, training and inference.

    PYTHONPATH=src python scripts/check_cuda.py [--device cuda]

Prints one line per group and the worst difference; exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
import warnings

import torch

import rnnkit
from rnnkit.backends import fused, native, scan
from rnnkit.cells import LSTMState

I, H, P, T, B = 3, 4, 2, 6, 4
LENGTHS = [5, 2, 6, 1]
TOL = 1e-10


def parts(state) -> list[torch.Tensor]:
    return list(state) if isinstance(state, LSTMState) else [state]


def cases(backend_cells) -> list[tuple[str, str, dict, int]]:
    """(id, cell, options, proj_size) for every registered cell in ``backend_cells``."""
    out = []
    for cell in rnnkit.cells():
        if cell not in backend_cells:
            continue
        out.append((cell, cell, {}, 0))
        if rnnkit.make_cell(cell).supports_proj:
            out.append((f"{cell}-proj", cell, {}, P))
        if cell == "indrnn":
            out += [("indrnn-tanh", cell, {"nonlinearity": "tanh"}, 0), ("indrnn-max", cell, {"recurrent_max": 0.5}, 0)]
    return out


def run(layer, x, state, lengths, seed):
    """Output, final state and every gradient of a fixed random linear function of both (on the CPU)."""
    x = x.detach().clone().requires_grad_()
    state = [s.detach().clone().requires_grad_() for s in state]
    layer.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the regularizers' masks
    out, final = layer(x, LSTMState(*state) if len(state) == 2 else state[0], lengths=lengths)
    results = [out, *parts(final)]
    gen = torch.Generator().manual_seed(2)
    loss = sum((r * torch.randn(r.shape, dtype=r.dtype, generator=gen).to(r.device)).sum() for r in results)
    loss.backward()
    grads = [x.grad, *(s.grad for s in state), *(p.grad for p in layer.parameters())]
    return [t.detach().cpu() for t in results + grads]


def worst(a: list[torch.Tensor], b: list[torch.Tensor], relative: bool = False) -> float:
    """The largest absolute difference over tensor pairs; relative: each divided by max |a| of its tensor."""
    def diff(u, v):
        if not u.numel():
            return 0.0
        d = float((u.double() - v.double()).abs().max())
        return d / max(float(u.double().abs().max()), 1e-30) if relative else d
    return max(diff(u, v) for u, v in zip(a, b))


def compare(backend: str, case, layers, bidir, lengths, device, regs=None, steps=T, dtype=torch.float64,
            relative=False):
    """Worst difference of ``backend`` on device against reference on device, and of that against CPU."""
    _, cell, options, proj_size = case
    torch.manual_seed(0)
    kwargs = dict(num_layers=layers, bidirectional=bidir, proj_size=proj_size, dtype=dtype, **options, **(regs or {}))
    cpu_ref = rnnkit.Recurrent(cell, I, H, backend="reference", **kwargs)
    with torch.no_grad():  # off the init rule, so no term is trivially zero
        for p in cpu_ref.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ref = rnnkit.Recurrent(cell, I, H, backend="reference", device=device, **kwargs)
    ours = rnnkit.Recurrent(cell, I, H, backend=backend, device=device, **kwargs)
    ref.load_state_dict(cpu_ref.state_dict())
    ours.load_state_dict(cpu_ref.state_dict())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(steps, B, I, dtype=dtype, generator=gen)
    sizes = cpu_ref.cell.state_sizes(H, proj_size)
    state = [torch.randn(layers * (2 if bidir else 1), B, n, dtype=dtype, generator=gen) for n in sizes]
    lens = None if lengths is None else torch.tensor(lengths)
    on = lambda ts: [t.to(device) for t in ts]  # noqa: E731
    got = run(ours, x.to(device), on(state), None if lens is None else lens.to(device), seed=5)
    assert ours.last_backend == backend, f"{backend} asked for, {ours.last_backend} ran"
    expected = run(ref, x.to(device), on(state), None if lens is None else lens.to(device), seed=5)
    vs_cpu = None if regs else worst(run(cpu_ref, x, state, lens, seed=5), expected)
    return worst(expected, got, relative), vs_cpu


def group(name, results, tol) -> bool:
    """Print one line for a group of (id, diff, diff_vs_cpu); True when all are within tol."""
    bad = [(i, d) for i, d, _ in results if not d <= tol]
    cpu = [c for _, _, c in results if c is not None]
    cpu_text = f"; CUDA reference vs CPU reference worst {max(cpu):.1e}" if cpu else ""
    print(f"{'FAIL' if bad else 'ok  '} {name}: {len(results)} cases, worst {max(d for _, d, _ in results):.1e} "
          f"(tolerance {tol:.0e}){cpu_text}", flush=True)
    for i, d in bad[:10]:
        print(f"     {i}: {d:.3e}")
    return not bad


def grid(backend_cells):
    for case, layers, bidir, lengths in itertools.product(cases(backend_cells), [1, 2], [False, True],
                                                          [None, LENGTHS]):
        name = f"{case[0]}-L{layers}-{'bi' if bidir else 'uni'}-{'len' if lengths else 'full'}"
        yield case, layers, bidir, lengths, name


def bf16_check(device) -> list[tuple[str, float, None]]:
    out = []
    for case in cases(fused.KERNELS):
        _, cell, options, proj_size = case
        torch.manual_seed(0)
        layer = rnnkit.Recurrent(cell, I, H, num_layers=2, proj_size=proj_size, backend="fused", device=device,
                                 **options)
        x = torch.randn(T, B, I, device=device)
        expected, _ = layer(x, lengths=LENGTHS)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            got, _ = layer(x, lengths=LENGTHS)
            got.float().sum().backward()
        ok = all(p.grad.dtype == torch.float32 and bool(torch.isfinite(p.grad).all()) for p in layer.parameters())
        diff = float((expected - got.float()).abs().max().detach())
        out.append((case[0], diff if ok else float("nan"), None))
    return out


def flat_weights_check(device) -> list[tuple[str, float, None]]:
    """torch's cells keep their weights in one cuDNN buffer, made at construction and by .to(): no copy per call.

    Compared in float32 with the CPU, so TF32 is turned off for the comparison: cuDNN's RNNs and cuBLAS run
    TF32 matrix products by default (``torch.backends.cudnn.allow_tf32``), whose 10-bit mantissa differs
    from the CPU's float32 by up to 4.6e-4 here (H200); without it the difference is float32 rounding.
    """
    with _tf32_off():
        return _flat_weights_check(device)


@contextlib.contextmanager
def _tf32_off():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _flat_weights_check(device) -> list[tuple[str, float, None]]:
    out = []
    for cell in native._KERNELS:
        for how in ("device=", ".to()"):
            torch.manual_seed(0)
            cpu = rnnkit.Recurrent(cell, 8, 16, num_layers=2, bidirectional=True)
            layer = rnnkit.Recurrent(cell, 8, 16, num_layers=2, bidirectional=True, device=device) \
                if how == "device=" else rnnkit.Recurrent(cell, 8, 16, num_layers=2, bidirectional=True).to(device)
            layer.load_state_dict(cpu.state_dict())
            x = torch.randn(5, 3, 8)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got, _ = layer(x.to(device))
                got.sum().backward()
            copied = [w for w in caught if "contiguous chunk" in str(w.message)]
            diff = float((cpu(x)[0] - got.cpu()).abs().max().detach()) if not copied else float("nan")
            out.append((f"{cell} {how}", diff, None))
    return out


def auto_choices(device) -> None:
    print("auto picks on", device, "(B=32, I=H=64):")
    for cell in rnnkit.cells():
        picks = []
        for steps, training in [(16, True), (100, True), (100, False)]:
            layer = rnnkit.Recurrent(cell, 64, 64, device=device)
            x = torch.randn(steps, 32, 64, device=device, requires_grad=training)
            with torch.set_grad_enabled(training):
                layer(x)
            picks.append(f"T={steps} {'train' if training else 'infer'}: {layer.last_backend}")
        print(f"  {cell:15s} " + ", ".join(picks))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"torch {torch.__version__} sees no CUDA device", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__} | {name} | float64, tolerance {TOL:.0e} unless stated", flush=True)
    ok = True
    results = [(i, *compare("fused", c, L, d, n, device)) for c, L, d, n, i in grid(fused.KERNELS)]
    ok &= group("fused == reference", results, TOL)
    regs_results = []
    for case, layers, bidir, lengths, i in grid(fused.KERNELS):
        is_lstm = rnnkit.make_cell(case[1]).state_type is LSTMState
        regs = {"zoneout": 0.4} if case[1] in ("mingru", "minlstm") else \
            {"hidden_dropout": 0.4, "zoneout": (0.3, 0.6) if is_lstm else 0.4}
        regs_results.append((i, *compare("fused", case, layers, bidir, lengths, device, regs)))
    ok &= group("fused == reference under hidden dropout + zoneout", regs_results, TOL)
    scans = [(i, *compare("scan", c, L, d, n, device)) for c, L, d, n, i in grid(scan.LOG_COEFFICIENTS)]
    ok &= group("scan == reference", scans, TOL)
    for dt, tol in [(torch.float64, 1e-8), (torch.float32, 2e-2)]:  # float32 on the CPU: 1.0e-2 to 1.1e-2
        long = [(f"{c[0]}-T2000", compare("scan", c, 1, False, None, device, steps=2000, dtype=dt, relative=True)[0],
                 None) for c in cases(scan.LOG_COEFFICIENTS)]
        ok &= group(f"scan == reference at T=2000 in {dt}, relative to each tensor's largest entry", long, tol)
    ok &= group("native (cuDNN) == reference", [(i, *compare("native", c, L, d, n, device))
                                                for c, L, d, n, i in grid(native._KERNELS)], 1e-9)
    # float32 with TF32 off (flat_weights_check), so only float32 rounding remains; a copy warning gives nan
    ok &= group("native weights in one cuDNN buffer (no copy warning), float32 (TF32 off) vs CPU",
                flat_weights_check(device), 1e-5)
    ok &= group("bfloat16 autocast fused vs float32", bf16_check(device), 5e-2)
    auto_choices(device)
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
