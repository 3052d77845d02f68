"""The triton backend: per layer and direction one ``torch.autograd.Function`` whose time loop runs,
per step, the recurrent GEMM on torch (cuBLAS on a GPU) into preallocated buffers and ONE Triton
kernel for all of the step's pointwise work, forward and backward; the weight gradients are one
GEMM each over all steps, as in ``fused`` (whose contract, in ``fused/__init__.py``, each family's
``recurrence`` follows; the layer's driver is ``rnnkit.driver.run_stack``). The kernels also take the
hidden-dropout and zoneout masks and the lengths. On CUDA the loop of each shape and dtype is
captured in a CUDA graph (``common.GraphCache``).

It runs CUDA tensors, and CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set
before triton is imported), which is how the tests check it on machines without a GPU.
``auto`` never picks it (see ``backends/__init__.py``): it runs when named.

triton is imported only when a layer runs, so rnnkit imports without it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

from torch import Tensor

from ...cells import State
from ...driver import run_stack

NAME = "triton"

# cell name -> the module (in this package) whose ``recurrence`` runs it
KERNELS = {
    "lstm": "lstm",
    "peephole_lstm": "lstm",
    "layernorm_lstm": "lstm",
    "cifg_lstm": "lstm",
    "rnn_tanh": "elman",
    "rnn_relu": "elman",
    "indrnn": "indrnn",
    "gru": "gru",
    "cho_gru": "gru",
    "mingru": "minimal",
    "minlstm": "minimal",
}


def interpreter_on() -> bool:
    """Whether Triton's interpreter runs the kernels (on CPU tensors): TRITON_INTERPRET=1."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def supports(problem) -> str | None:
    if problem.cell not in KERNELS:
        return f"no triton kernel for cell {problem.cell!r} yet (triton runs {', '.join(KERNELS)})"
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton)"
    if problem.device != "cuda" and not (problem.device == "cpu" and interpreter_on()):
        return (f"triton runs CUDA tensors, or CPU tensors under its interpreter (TRITON_INTERPRET=1 set before "
                f"triton is imported); got device {problem.device!r}")
    return None  # every regularizer: the driver applies the rest, the kernels hidden dropout and zoneout


def run(layer, x: Tensor, lengths: Tensor | None, state: State) -> tuple[Tensor, State]:
    module = importlib.import_module(f"{__name__}.{KERNELS[layer.cell.name]}")
    return run_stack(layer, x, lengths, state, module.recurrence)
