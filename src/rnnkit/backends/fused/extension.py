"""The C++ time loops of the fused LSTM family (``csrc/``): built on first use, cached, optional.

``load()`` compiles the extension with ``torch.utils.cpp_extension.load`` the first time a process
asks for it, and returns its ops (``torch.ops.rnnkit_fused``: ``lstm_forward``, ``lstm_backward``,
``lstm_forward_tiled``, ``lstm_step_pack`` and ``lstm_step`` (``rnnkit.stepper``), ``packed_gemm_status``,
``brgemm_status``), or None when it cannot: ``RNNKIT_NO_EXTENSION=1`` is set, there is no C++
compiler or no ninja, the build fails. ``status()`` says which, in words; ``details()`` gives the same
as a dict for ``rnnkit info``. Nothing here raises: the fused backend then runs its Python loops, and
``_LSTMLoop`` warns once with the reason.

The build uses the environment's own tools whether or not the environment is activated: torch runs
``ninja`` from PATH, so when PATH has none, the ninja that ``pip install ninja`` put next to this
Python (the ``ninja`` package's ``BIN_DIR``) goes in front of PATH for the build only (os.environ is
restored after). That ninja is used even where PATH has another (see ``find_ninja``). While it
compiles, one line goes to stderr (``BUILD_MESSAGE``).

The build takes 20-60 s on 2 cores and is cached by torch in ``TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``); a later process loads the cached library in about a second, and
torch rebuilds it when a source, a header or the flags change. A failed build is cached too
(``rnnkit_build_failed.txt`` in the cache folder), so that every process does not recompile just to
fail again; it is retried as soon as anything it depended on changes (the source, the flags, torch,
rnnkit, the compiler's or ninja's path or version, PATH), or when that file is deleted.

The flags do not use ``-march=native``, so a cache copied to another machine of the same class still
runs: on x86 CPUs where torch itself runs AVX-512 kernels the loops are compiled for AVX-512
(``at::vec::Vectorized`` with 16 floats), where it runs AVX2 kernels for AVX2 + FMA (8 floats),
elsewhere for torch's portable ``Vectorized`` (correct, slower). ``RNNKIT_CPU_VARIANT=avx2`` (or
``default``) asks for a lower variant than the CPU's, e.g. to run the AVX2 loops on an AVX-512 CPU; a
higher one than the CPU runs is refused with the reason. The variant is part of the module name, so
each has its own cache entry.

Separately, ``packed_gemm()`` says whether the recurrent GEMMs can use oneDNN with weights packed
once per sequence (the private ops ``mkldnn::_reorder_linear_weight`` and
``mkldnn::_linear_pointwise``, checked against ``addmm`` once per process); if not, the C++ loops use
``at::addmm`` and ``status()`` names the reason. Batches of at most ``GEMV_MAX_BATCH`` rows use neither:
``forward_gemm`` and ``backward_gemm`` give them rnnkit's own gemv (csrc/gemm.h), in float32 and float64.

Under CPU bf16 autocast the loops run float32 (state, gates, layer norms, outputs), and ``autocast_gemm()`` says
how their per-step products run: 'bf16' (bf16 operands, float32 accumulation: ``cpublas::brgemm`` on weights
converted and packed once per call) on a CPU with bf16 instructions (AVX-512 BF16 or AMX) where
``bf16_gemm_status()`` says it runs, else float32 GEMMs. ``RNNKIT_BF16_GEMM=1`` forces bf16 operands where the
CPU lacks the instructions ('bf16-emulated': the same rounding, float32 products; correct, slower: for tests),
``RNNKIT_BF16_GEMM=0`` forces float32.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

ENV_DISABLE = "RNNKIT_NO_EXTENSION"
ENV_VARIANT = "RNNKIT_CPU_VARIANT"  # avx2 or default: a lower variant than the CPU's
ENV_BF16 = "RNNKIT_BF16_GEMM"  # 1 or 0: bf16 GEMMs in the C++ loops under CPU bf16 autocast forced on or off
VARIANTS = ("avx512", "avx2", "default")  # best first
BUILD_MESSAGE = "building rnnkit's C++ loops for this CPU, once (about a minute on 2 cores)"
FAILED_FILE = "rnnkit_build_failed.txt"  # in the cache folder: the failed build's key, then its reason
BUILT_FILE = "rnnkit_build_ok.txt"  # in the cache folder: the build's key, then its seconds
CSRC = Path(__file__).parent / "csrc"  # the C++ sources (*.cpp, compiled) and their headers (*.h)
_STALE_LOCK_S = 600  # a build lock older than this was left by a killed build
_LIB_SUFFIX = ".pyd" if os.name == "nt" else ".so"

_ops = None  # torch.ops.rnnkit_fused once built
_reason: str | None = None  # why the extension is unavailable; "" when loaded; None before the first attempt
_packed_reason: str | None = None  # "" when the packed oneDNN GEMM works
_self_checks: dict[str, str] = {}  # a C++ self-check op's name -> its answer: "" (it runs here) or why not
_build_seconds: float | None = None  # how long the build that made the loaded library took
_built_now = False  # whether this process compiled it (else it came from the cache)
_variant: str | None = None  # the variant loaded: 'avx512', 'avx2' or 'default'
_warned: set[str] = set()  # the callers of load_or_warn already told that the C++ loops did not load


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


def load_or_warn(caller: str, instead: str, stacklevel: int):
    """``load()`` for ``caller`` ("rnnkit fused LSTM"): where the ops cannot load (and ``RNNKIT_NO_EXTENSION`` did
    not ask for that), warns once per caller, naming the reason and what runs ``instead``; ``stacklevel`` as
    ``warnings.warn``'s, counted from the caller."""
    ops = load()
    if ops is None and not disabled() and caller not in _warned:
        _warned.add(caller)
        warnings.warn(f"{caller}: C++ loops {status()}; {instead}", RuntimeWarning, stacklevel=stacklevel + 1)
    return ops


def status() -> str:
    """One line: whether the C++ loops run, and if not, why (builds the extension if not yet tried)."""
    if disabled():
        return f"disabled by {ENV_DISABLE}={os.environ[ENV_DISABLE]}: the fused LSTM family runs its Python loops"
    load()
    if _ops is None:
        return f"unavailable: {_reason}"
    gemm = "packed oneDNN GEMM" if packed_gemm() else f"at::addmm GEMM ({_packed_reason})"
    brgemm = "runs here" if brgemm_status() == "" else brgemm_status()
    gemm += (f", rnnkit's gemv at batch <= {GEMV_MAX_BATCH}, tiled inference and layer.step on rnnkit's own at::vec "
             f"micro-kernel (cpublas::brgemm float32: {brgemm})")
    instructions = cpu_bf16_instructions()
    bf16 = bf16_gemm_status() or "runs here"
    gemm += (f"; bf16 GEMMs under CPU autocast: {bf16}" if instructions else
             f"; bf16 GEMMs under CPU autocast: none (no AVX-512 BF16 or AMX; {ENV_BF16}=1 emulates them)")
    if _build_seconds is None:
        built = ""
    else:
        built = f", built in {_build_seconds:.0f} s" + ("" if _built_now else " earlier, loaded from the cache")
    return f"loaded ({_variant}, {gemm}{built})"


def details() -> dict:
    """The C++ loops' state for ``rnnkit info``, building them if not yet tried.

    ``loaded`` (bool), ``status`` (the line of ``status()``), ``variant`` (the instruction set the loops
    are compiled for), ``build_seconds`` (None when unknown), ``built_now``, ``cache_dir`` (where torch
    keeps the build), ``compiler`` and ``ninja`` (the executables a build uses; None when missing).
    """
    line = status()
    ninja = find_ninja()
    variant = _variant or variant_choice()[0]
    cache_dir = None if variant is None else _build_dir(_module_name(variant))
    return {"loaded": _ops is not None and not disabled(), "status": line, "variant": variant or _capability(),
            "build_seconds": _build_seconds, "built_now": _built_now,
            "cache_dir": None if cache_dir is None else str(cache_dir),
            "compiler": find_compiler(build_path(ninja)), "ninja": ninja}


def loaded_variant() -> str | None:
    """The variant of the loaded loops ('avx512', 'avx2' or 'default'), None before they load."""
    return _variant


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


# the LSTM kinds of the C++ loops, numbered as csrc/gates.h's Kind; float32 and float64 (bf16 autocast runs float32)
KINDS = {"lstm": 0, "peephole_lstm": 1, "cifg_lstm": 2, "layernorm_lstm": 3}
# kinds whose float32 inference without projection runs the tiled step (csrc/tile.h), and layer.step's C++ step
TILED_KINDS = ("lstm", "peephole_lstm", "cifg_lstm")
# and layernorm_lstm's: the two-pass step, h_{t-1} W_hh^T on the tiles (tiled_raw), then a row pass (layer_norm.h)
TILED_GX_KINDS = (*TILED_KINDS, "layernorm_lstm")


# batches up to this size run the per-step products on rnnkit's own gemv (csrc/gemm.h), larger ones on oneDNN's
# packed GEMM or addmm: one oneDNN call per step costs more than a few rows' product (one thread, loaded: the gemv
# took 0.3x-0.7x the packed GEMM's time at batch 1-8, 0.7x-0.8x at 16 and 32; docs/results.md, "Issue 30:
# batch 1"); batched shapes keep the packed GEMM until a quiet 2-thread run says otherwise
GEMV_MAX_BATCH = 8


def forward_gemm(kind: str, training: bool, dtype: torch.dtype, weight_hr: torch.Tensor | None, batch: int) -> str:
    """How the C++ forward forms the recurrent products: 'tiled', 'gemv', 'packed' (oneDNN) or 'addmm'.

    'tiled' for float32 inference of lstm, peephole, cifg and layernorm_lstm without projection; else 'gemv' for a
    batch of at most ``GEMV_MAX_BATCH`` rows; else 'packed' where ``packed_gemm()`` (float64 then runs addmm in
    C++), else 'addmm'.
    """
    if not training and dtype == torch.float32 and weight_hr is None and kind in TILED_GX_KINDS:
        return "tiled"
    return backward_gemm(batch)


def backward_gemm(batch: int) -> str:
    """How the C++ backward forms dh_{t-1} = da W_hh (and dm = dh W_hr): 'gemv' for a batch of at most
    ``GEMV_MAX_BATCH`` rows, else 'packed' where ``packed_gemm()`` (float64 then runs addmm), else 'addmm'."""
    if batch <= GEMV_MAX_BATCH:
        return "gemv"
    return "packed" if packed_gemm() else "addmm"


def tiled_gemm() -> str:
    """The tile the tiled step from x (``lstm_forward_tiled``) accumulates: 'tiled', rnnkit's own micro-kernel
    (``brgemm`` is the comparison the tests run)."""
    return "tiled"


def brgemm_status() -> str:
    """"" when ``at::native::cpublas::brgemm`` runs float32 here (checked once), else why not.

    The tiled step does not call it (csrc/tile.h has its own micro-kernel); this is for ``rnnkit info``.
    """
    return _self_check("brgemm_status", "brgemm")


def bf16_gemm_status() -> str:
    """"" when the 'bf16' GEMMs (``cpublas::pack`` + ``cpublas::brgemm``, bf16 x bf16 -> float32, csrc/gemm.h)
    run here and agree with ``at::mm`` of the bf16-rounded operands (checked once), else why not."""
    return _self_check("bf16_gemm_status", "bf16 GEMM")


def _self_check(op: str, what: str) -> str:
    """The answer of the C++ self-check ``op`` ("" or the reason), asked once per process; a private API of torch
    that breaks is a reason too, never an error (it must not break ``rnnkit info`` or training)."""
    if _ops is None:
        return "the C++ loops are not loaded"
    if op not in _self_checks:
        try:
            _self_checks[op] = str(getattr(_ops, op)())
        except Exception as e:
            _self_checks[op] = f"{what} check failed: {e}"
    return _self_checks[op]


def cpu_bf16_instructions() -> str | None:
    """The bf16 instructions this CPU has, in words ('AMX', 'AVX-512 BF16'), or None (torch's private checks)."""
    checks = (("AMX", "_is_amx_tile_supported"), ("AVX-512 BF16", "_is_avx512_bf16_supported"))
    for name, check in checks:
        try:
            if getattr(torch.cpu, check)():
                return name
        except (AttributeError, RuntimeError):
            continue
    return None


def bf16_forced() -> bool | None:
    """``RNNKIT_BF16_GEMM``: True (1), False (0) or None (unset: the CPU decides), read on every call."""
    value = os.environ.get(ENV_BF16, "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{ENV_BF16}={value!r}: expected 1 (bf16 GEMMs on), 0 (off) or unset (the CPU decides)")
    return None if value == "" else value == "1"


def autocast_gemm() -> tuple[str | None, str]:
    """How the C++ loops form their per-step products under CPU bf16 autocast: (gemm, note).

    ('bf16', "") on a CPU with bf16 instructions where ``bf16_gemm_status()`` is "" (unless
    ``RNNKIT_BF16_GEMM=0``); ('bf16-emulated', note) where ``RNNKIT_BF16_GEMM=1`` asks for bf16 GEMMs that cannot
    run here (bf16-rounded operands, float32 products: the numbers of 'bf16', slower than float32); (None, note):
    float32 GEMMs. The note says why, in words, for the once-per-process warning; "" needs none.
    """
    forced = bf16_forced()
    if forced is False:
        return None, f"the C++ loops run in float32 ({ENV_BF16}=0)"
    instructions = cpu_bf16_instructions()
    status = bf16_gemm_status()
    if instructions is not None and status == "":
        return "bf16", ""
    why = ("this CPU has no bf16 instructions (AVX-512 BF16 or AMX)" if instructions is None
           else f"the bf16 GEMMs do not run on this {instructions} CPU: {status}")
    if forced:
        return "bf16-emulated", (f"{ENV_BF16}=1 but {why}: the C++ loops emulate the bf16 GEMMs (bf16-rounded "
                                 f"operands, float32 products; correct, slower than float32)")
    return None, f"the C++ loops run in float32 ({why})"


def find_ninja(path: str | None = None) -> str | None:
    """The ninja executable a build runs: the environment's own, else the one on ``path`` (default: PATH).

    The environment's own is the one the ``ninja`` package installed (its ``BIN_DIR``), or one next to
    ``sys.executable``; both are on PATH only when the environment is activated. Taking it first makes
    an activated and a bare shell run the same ninja: ninja versions keep their logs in different
    formats, and each switch between a system ninja and the environment's recompiled everything.
    """
    folders = []
    try:
        import ninja  # the PyPI package, a dependency of rnnkit

        folders.append(str(ninja.BIN_DIR))
    except (ImportError, AttributeError):
        pass
    folders.append(str(Path(sys.executable).parent))  # not resolved: a venv's python is a symlink
    for folder in folders:
        found = shutil.which("ninja", path=folder)
        if found:
            return found
    return shutil.which("ninja", path=path)


def build_path(ninja: str | None, path: str | None = None) -> str:
    """The PATH a build runs with: ``path`` (default: PATH), with ninja's folder in front unless ``ninja``
    is already the one PATH finds (torch runs the ``ninja`` that PATH finds).

    In front, as activating the environment would put it: a compiler installed in the environment
    (conda's) then wins over the system's, as it does for an activated environment.
    """
    path = os.environ.get("PATH", os.defpath) if path is None else path
    if ninja is None or shutil.which("ninja", path=path) == ninja:
        return path
    folder = str(Path(ninja).parent)
    return folder + os.pathsep + path if path else folder


def find_compiler(path: str | None = None) -> str | None:
    """The C++ compiler torch's build runs (``$CXX``, default ``c++``), looked up on ``path``; None if absent."""
    return shutil.which(os.environ.get("CXX", "c++"), path=path)


def _tool_version(executable: str | None) -> str:
    """The first line of ``executable --version``, or why there is none."""
    if executable is None:
        return "missing"
    try:
        done = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({type(e).__name__})"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else f"unknown (exit status {done.returncode})"


def cpu_variant() -> str:
    """The best variant this CPU runs: 'avx512' or 'avx2' where torch dispatches those kernels (x86), else
    'default'."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "default"
    cap = torch.backends.cpu.get_cpu_capability()
    return "avx512" if cap.startswith("AVX512") else "avx2" if cap == "AVX2" else "default"


def variant_choice() -> tuple[str | None, str]:
    """(the variant to build, "") or (None, why none): ``cpu_variant()``, or the lower one that
    ``RNNKIT_CPU_VARIANT`` asks for (read on every call)."""
    best = cpu_variant()
    asked = os.environ.get(ENV_VARIANT, "").strip()
    if not asked:
        return best, ""
    if asked not in VARIANTS:
        return None, f"{ENV_VARIANT}={asked!r}: expected one of {', '.join(VARIANTS)}"
    if VARIANTS.index(asked) < VARIANTS.index(best):
        return None, f"{ENV_VARIANT}={asked} asks for more than this CPU runs (at most {best})"
    return asked, ""


def _capability() -> str:
    """The instruction set the loops are (to be) compiled for, or why none can."""
    variant, reason = variant_choice()
    return variant or f"none ({reason})"


def _module_name(capability: str) -> str:
    return f"rnnkit_fused_{capability}"


def _flags(capability: str) -> list[str]:
    # CPU_CAPABILITY names the inline namespace of at::vec: our own name keeps our inline copies of
    # Vectorized apart from torch's own.
    flags = ["-O3", f"-DCPU_CAPABILITY={capability}_rnnkit"]
    if capability == "avx512":  # the flags torch compiles its own AVX-512 kernels with
        flags += ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX512"]
    elif capability == "avx2":
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


def build_inputs(flags: list[str], ninja: str | None, path: str) -> dict[str, str]:
    """Everything a build's outcome depends on; a cached failure is retried when any of it changes."""
    from rnnkit import __version__

    compiler = find_compiler(path)
    sources = hashlib.sha256()
    for source in source_files():
        sources.update(source.name.encode() + b"\0" + source.read_bytes())
    return {"sources": sources.hexdigest(), "flags": " ".join(flags), "torch": torch.__version__,
            "rnnkit": __version__, "python": sys.version, "compiler": str(compiler),
            "compiler_version": _tool_version(compiler), "ninja": str(ninja), "ninja_version": _tool_version(ninja),
            "PATH": path}


def source_files() -> list[Path]:
    """Every file the build reads from ``csrc/``: the sources it compiles and the headers they include."""
    return sorted(p for p in CSRC.iterdir() if p.suffix in (".cpp", ".h"))


def build_key(inputs: dict[str, str]) -> str:
    """A digest of ``build_inputs``: equal keys, equal outcome."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _compile_key(inputs: dict[str, str]) -> str:
    """A digest of what makes torch and ninja compile again: the source, the flags, torch, Python.

    Not the compiler (torch's build file names ``c++``, not its path), ninja, PATH or rnnkit's version.
    Only for the message and the recorded build time: whether ninja compiled is read off the library.
    """
    return build_key({k: inputs[k] for k in ("sources", "flags", "torch", "python")})


def _read_record(file: Path | None) -> tuple[str, str] | None:
    """(key, rest) of a record written by _build, or None."""
    if file is None or not file.exists():
        return None
    try:
        key, _, rest = file.read_text().partition("\n")
    except OSError:
        return None
    return key, rest


def _write_record(file: Path | None, key: str, rest: str) -> None:
    if file is None:
        return
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(f"{key}\n{rest}")
    except OSError:  # a read-only cache folder costs a rebuild next time, nothing more
        pass


def _mtime(file: Path | None) -> int | None:
    try:
        return None if file is None else file.stat().st_mtime_ns
    except OSError:
        return None


def _forget(file: Path | None) -> None:
    try:
        if file is not None:
            file.unlink(missing_ok=True)
    except OSError:
        pass


def _build() -> None:
    global _ops, _reason, _build_seconds, _built_now, _variant
    ninja = find_ninja()
    path = build_path(ninja)
    compiler = find_compiler(path)
    if compiler is None:
        _reason = (f"no C++ compiler ({os.environ.get('CXX', 'c++')!r} is not on PATH; install g++ or clang++, "
                   f"or set CXX)")
        return
    if ninja is None:
        _reason = (f"no ninja (not on PATH, not in the ninja package, not next to {sys.executable}); "
                   f"pip install ninja")
        return
    capability, why_not = variant_choice()
    if capability is None:
        _reason = why_not
        return
    name = _module_name(capability)
    flags = _flags(capability)
    build_dir = _build_dir(name)
    failed = build_dir / FAILED_FILE if build_dir else None
    built = build_dir / BUILT_FILE if build_dir else None
    try:
        inputs = build_inputs(flags, ninja, path)
    except OSError as e:  # an unreadable source: the build would fail the same way
        _reason = f"cannot read the C++ source: {e}"
        return
    key, compile_key = build_key(inputs), _compile_key(inputs)
    # a build that failed before fails again: say so at once instead of recompiling in every process
    record = _read_record(failed)
    if record is not None and record[0] == key:
        _reason = (f"{record[1]} (cached from an earlier attempt; it is retried when the compiler, ninja, PATH, "
                   f"torch, rnnkit or the source change; delete {failed} to retry now)")
        return
    # a lock left by a killed build would make torch wait forever
    lock = build_dir / "lock" if build_dir else None
    try:
        if lock is not None and lock.exists() and time.time() - lock.stat().st_mtime > _STALE_LOCK_S:
            lock.unlink()
    except OSError:
        pass
    record = _read_record(built)
    library = build_dir / f"{name}{_LIB_SUFFIX}" if build_dir else None
    mtime_before = _mtime(library)
    cached = record is not None and record[0] == compile_key and mtime_before is not None
    if not cached:
        where = "" if build_dir is None else f", into {build_dir}"
        print(BUILD_MESSAGE + where, file=sys.stderr, flush=True)
    saved_path = os.environ.get("PATH")
    os.environ["PATH"] = path  # torch runs `ninja` from PATH, in this process and in its subprocesses
    try:
        from torch.utils import cpp_extension

        start = time.perf_counter()
        cpp_extension.load(
            name=name,
            sources=[str(s) for s in source_files() if s.suffix == ".cpp"],  # ninja tracks the headers
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
            verbose=False,
        )
        seconds = time.perf_counter() - start
        _ops = torch.ops.rnnkit_fused
        _reason, _variant = "", capability
        if library is not None and _mtime(library) == mtime_before:  # ninja found nothing to compile
            if record is not None and record[0] == compile_key:
                try:
                    _build_seconds = float(record[1].split()[0])
                except (IndexError, ValueError):
                    _build_seconds = None
            else:  # built by an older rnnkit, which kept no record: the time is unknown
                _write_record(built, compile_key, "unknown")
        else:
            _build_seconds, _built_now = seconds, True
            _write_record(built, compile_key, f"{seconds:.1f}")
        _forget(failed)  # an older failure, under other inputs, must not stop a later process
    except Exception as e:  # the Python loops remain; status() reports this
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        errors = [line for line in lines if "error:" in line]  # the compiler's first complaint
        detail = (errors or lines or [""])[0]
        _reason = f"build failed: {type(e).__name__}: {detail}"[:500]
        _ops = None
        _write_record(failed, key, _reason)
    finally:
        if saved_path is None:
            del os.environ["PATH"]
        else:
            os.environ["PATH"] = saved_path
