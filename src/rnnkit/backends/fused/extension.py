"""The C++ time loops of the fused LSTM family (``csrc/lstm.cpp``): built on first use, cached, optional.

``load()`` compiles the extension with ``torch.utils.cpp_extension.load`` the first time a process
asks for it, and returns its ops (``torch.ops.rnnkit_fused``: ``lstm_forward``, ``lstm_backward``,
``packed_gemm_status``), or None when it cannot: ``RNNKIT_NO_EXTENSION=1`` is set, there is no C++
compiler, the build fails. ``status()`` says which, in words. Nothing here raises: the fused
backend then runs its Python loops, and ``_LSTMFamily`` warns once with the reason.

The build takes about 30 s on 2 cores and is cached by torch in ``TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``); a later process loads the cached library in well under a second, and
torch rebuilds it when the source or the flags change. The flags do not use ``-march=native``, so a
cache copied to another machine still runs: on x86 CPUs where torch itself runs AVX2 or AVX-512
kernels the loops are compiled for AVX2 + FMA (``at::vec::Vectorized`` with 8 floats), elsewhere for
torch's portable ``Vectorized`` (correct, slower). The capability is part of the module name, so each
variant has its own cache entry.

Separately, ``packed_gemm()`` says whether the recurrent GEMMs can use oneDNN with weights packed
once per sequence (the private ops ``mkldnn::_reorder_linear_weight`` and
``mkldnn::_linear_pointwise``, checked against ``addmm`` once per process); if not, the C++ loops use
``at::addmm`` and ``status()`` names the reason.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import time
from pathlib import Path

import torch

ENV_DISABLE = "RNNKIT_NO_EXTENSION"
_SOURCES = [Path(__file__).parent / "csrc" / "lstm.cpp"]
_STALE_LOCK_S = 600  # a build lock older than this was left by a killed build

_ops = None  # torch.ops.rnnkit_fused once built
_reason: str | None = None  # why the extension is unavailable; None before the first attempt
_packed_reason: str | None = None  # "" when the packed oneDNN GEMM works
_build_seconds: float | None = None


def disabled() -> bool:
    """True when ``RNNKIT_NO_EXTENSION`` asks for the Python loops (read on every call)."""
    return os.environ.get(ENV_DISABLE, "").strip() not in ("", "0")


def load():
    """The extension's ops (``torch.ops.rnnkit_fused``), building it on first use; None if unavailable."""
    if disabled():
        return None
    if _reason is None:
        _build()
    return _ops


def status() -> str:
    """One line: whether the C++ loops run, and if not, why (builds the extension if not yet tried)."""
    if disabled():
        return f"disabled by {ENV_DISABLE}={os.environ[ENV_DISABLE]}: the fused LSTM family runs its Python loops"
    load()
    if _ops is None:
        return f"unavailable: {_reason}"
    gemm = "packed oneDNN GEMM" if packed_gemm() else f"at::addmm GEMM ({_packed_reason})"
    built = f", built in {_build_seconds:.0f} s" if _build_seconds and _build_seconds > 5 else ""
    return f"loaded ({_capability()}, {gemm}{built})"


def packed_gemm() -> bool:
    """Whether the loaded extension can use oneDNN's packed-weight GEMM (float32 only)."""
    global _packed_reason
    if _ops is None:
        return False
    if _packed_reason is None:
        try:
            _packed_reason = str(_ops.packed_gemm_status())
        except Exception as e:  # a broken private op must not break training
            _packed_reason = f"packed GEMM check failed: {e}"
    return _packed_reason == ""


def _capability() -> str:
    """The instruction set the loops are compiled for: 'avx2' or 'default'."""
    machine = platform.machine().lower()
    cap = torch.backends.cpu.get_cpu_capability()
    if machine in ("x86_64", "amd64") and cap in ("AVX2", "AVX512"):
        return "avx2"
    return "default"


def _flags(capability: str) -> list[str]:
    # CPU_CAPABILITY names the inline namespace of at::vec: our own name keeps our inline copies of
    # Vectorized apart from torch's own.
    flags = ["-O3", f"-DCPU_CAPABILITY={capability}_rnnkit"]
    if capability == "avx2":
        flags += ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2"]
    # at::parallel_for splits the pointwise pass over torch's OpenMP threads; the extension links
    # libgomp.so.1, which the loader resolves to the copy torch already loaded
    return flags + ["-fopenmp"]


def _build_dir(name: str) -> Path | None:
    """Where torch builds and caches the extension (private torch helper, so guarded)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return Path(_get_build_directory(name, verbose=False))
    except Exception:
        return None


def _build_key(flags: list[str]) -> str:
    """What a failed build depends on: the source, the flags, torch and the compiler."""
    digest = hashlib.sha256()
    for source in _SOURCES:
        digest.update(source.read_bytes())
    digest.update(" ".join([*flags, torch.__version__, os.environ.get("CXX", "c++")]).encode())
    return digest.hexdigest()


def _build() -> None:
    global _ops, _reason, _build_seconds
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        _reason = f"no C++ compiler ({compiler!r} not on PATH)"
        return
    capability = _capability()
    name = f"rnnkit_fused_{capability}"
    flags = _flags(capability)
    build_dir = _build_dir(name)
    failed = build_dir / "rnnkit_build_failed.txt" if build_dir else None
    try:
        key = _build_key(flags)
        # a build that failed before fails again: say so at once instead of recompiling in every process
        if failed is not None and failed.exists():
            recorded_key, _, recorded_reason = failed.read_text().partition("\n")
            if recorded_key == key:
                _reason = f"{recorded_reason} (cached; delete {failed} to retry)"
                return
        # a lock left by a killed build would make torch wait forever
        lock = build_dir / "lock" if build_dir else None
        if lock is not None and lock.exists() and time.time() - lock.stat().st_mtime > _STALE_LOCK_S:
            lock.unlink()
    except OSError:
        key = ""
    try:
        from torch.utils import cpp_extension

        start = time.perf_counter()
        cpp_extension.load(
            name=name,
            sources=[str(s) for s in _SOURCES],
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
            verbose=False,
        )
        _build_seconds = time.perf_counter() - start
        _ops = torch.ops.rnnkit_fused
        _reason = ""
    except Exception as e:  # the Python loops remain; status() reports this
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        errors = [line for line in lines if "error:" in line]  # the compiler's first complaint
        detail = (errors or lines or [""])[0]
        _reason = f"build failed: {type(e).__name__}: {detail}"[:500]
        _ops = None
        if failed is not None and key:
            try:
                failed.parent.mkdir(parents=True, exist_ok=True)
                failed.write_text(f"{key}\n{_reason}")
            except OSError:
                pass
