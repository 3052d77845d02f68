"""Pieces every Triton kernel family shares: dtypes, block sizes, the step bookkeeping, double
backward, and the CUDA-graph cache of the time loops.

Lengths are a prefix per sequence (step t of sequence b runs while t < lengths[b]), and every
kernel gets the lengths and the step index, so the whole mask is one compare inside the kernel.
BPTT uses that prefix: past a sequence's end every gradient is zero, so the gradient that reaches
h_t from outside the recurrence is, for all steps at once,

    base_t = dout_t [t < len]  +  dh_T [t = len - 1]

and each backward step's GEMM forms dh~_{t-1} = base_{t-1} + da_t W_hh as one ``addmm``: where
step t does not run, da_t is zero and so is base_{t-1} unless t - 1 is the last step.

This module imports triton; ``triton/__init__.py`` imports the family modules only when a layer
runs, so rnnkit imports where triton is missing. ``TRITON_INTERPRET=1`` must be set before triton is
imported for the interpreter to run CPU tensors (the tests set it at the top of their module).
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch
import triton
import triton.language as tl
from torch import Tensor

from ...cells import LSTMState, State
from ...driver import running_mask, time_loop
from ...regularize import StepNoise
from ..fused.common import differentiable_grads, rows_gemm, sum_rows  # noqa: F401 (the kernels import them from here)

HALF = (torch.float16, torch.bfloat16)


def compute_type(dtype: torch.dtype):
    """The type a kernel computes in: float64 for float64 (the tests), float32 otherwise (autocast's bf16 too)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the carried cell state: float32 under bf16/fp16 autocast, else the input's."""
    return torch.float32 if dtype in HALF else dtype


def block(n: int) -> int:
    """The smallest block that holds n units: a power of two, at least 16."""
    return max(16, triton.next_power_of_2(n))


# units per program for kernels without a reduction over a row: a (B, H / COLUMNS) grid keeps a GPU's
# multiprocessors busy at small batches (one program per batch row would leave most of them idle)
COLUMNS = 128


def tiles(n: int, whole_row: bool = False) -> dict:
    """A kernel's block and warps for rows of n units: COLUMNS units per program, or the whole row in one
    program where the kernel reduces over it (the layer norms). Launch over ``grid(B, n, BLOCK)``."""
    size = block(n) if whole_row else min(block(n), COLUMNS)
    return dict(BLOCK=size, num_warps=min(16, max(4, size // 128)))


def grid(B: int, n: int, size: int) -> tuple[int, int]:
    """Programs (batch row, block of units) for rows of n units in blocks of ``size``."""
    return (B, triton.cdiv(n, size))


def full_lengths(lengths: Tensor | None, T: int, B: int, device: torch.device) -> Tensor:
    """(B,) int64 on ``device``: the lengths, or T for every sequence. The kernels read it per step."""
    if lengths is None:
        return torch.full((B,), T, dtype=torch.int64, device=device)
    return lengths.to(device=device, dtype=torch.int64).contiguous()


def step_mask(lengths: Tensor, T: int) -> Tensor:
    """(T, B, 1) bool, True where step t of sequence b runs (``driver.running_mask``)."""
    return running_mask(lengths, T)[..., None]


def noise_masks(noise: StepNoise | None, lens: Tensor, dtype: torch.dtype) -> tuple[Tensor | None, list[Tensor] | None]:
    """The in-loop regularizers' masks as the kernels read them: (hidden, keep).

    hidden  (B, R) hidden-dropout mask on h_{t-1} in the recurrent products, in ``dtype``, or None
    keep    one uint8 (T, B, size) per state part, 1 where s_t = s_{t-1}: a zoned-out unit, or any unit of
            a step past the sequence's end; None without zoneout (the kernels then keep by the lengths)
    """
    if noise is None:
        return None, None
    hidden = None if noise.hidden is None else noise.hidden.to(dtype).contiguous()
    keep = None
    if noise.zoneout is not None:
        parts = state_parts(noise.zoneout)
        running = step_mask(lens, parts[0].shape[0])  # (T, B, 1)
        keep = [(k | ~running).to(torch.uint8).contiguous() for k in parts]
    return hidden, keep


def base_grad(grad_out: Tensor, grad_h: Tensor, lengths: Tensor) -> Tensor:
    """base_t = dout_t [t < len] + dh_T [t = len - 1], (T, B, R): the gradient reaching h_t from outside."""
    T = grad_out.shape[0]
    running = step_mask(lengths, T)  # (T, B, 1)
    last = (torch.arange(T, device=lengths.device)[:, None] == lengths - 1)[..., None]  # (T, B, 1)
    zero = grad_out.new_zeros(())
    return torch.where(running, grad_out, zero) + torch.where(last, grad_h, zero)


def gather_final(states: Tensor, lengths: Tensor) -> Tensor:
    """states[len_b, b] for every b, from a (T + 1, B, N) tensor whose row t is the state after t steps."""
    index = lengths.view(1, -1, 1).expand(1, states.shape[1], states.shape[2])
    return states.gather(0, index)[0]


def state_parts(state: State) -> list[Tensor]:
    return [state] if isinstance(state, Tensor) else list(state)


def reference_grads(cell, lengths: Tensor | None, gx: Tensor, state: State, weights: dict[str, Tensor | None],
                    grads: list[Tensor], noise: StepNoise | None = None) -> tuple[Tensor | None, ...]:
    """Double backward: the gradients of (gx, *state parts, *weights) recomputed on the reference loop.

    A backward that runs with grad mode on (``create_graph=True``) must itself be differentiable.
    The kernels write into preallocated buffers, which autograd cannot record, so, as the fused
    backend does (``fused.common.differentiable_grads``, whose docstring says what it costs), the
    sequence runs again through ``driver.time_loop`` with the same lengths and masks (so the same
    function), in gx's dtype as the kernels run under autocast, and autograd differentiates that with
    ``create_graph=True``. ``grads`` are the incoming (dout, *dstate). Weights that are None give None.
    """
    names, n = list(weights), len(state_parts(state))

    def run(gx, *rest):
        dtype = gx.dtype
        parts = [s.to(dtype) for s in rest[:n]]
        ws = {k: w.to(dtype) for k, w in zip(names, rest[n:]) if w is not None}
        masks = None
        if noise is not None:
            masks = StepNoise(None if noise.hidden is None else noise.hidden.to(dtype), noise.zoneout)
        out, final = time_loop(cell, gx, make_state(parts), ws, lengths, masks)
        return [out, *state_parts(final)]

    return tuple(differentiable_grads(run, [gx, *state_parts(state), *weights.values()], grads))


def make_state(parts: list[Tensor]) -> State:
    return parts[0] if len(parts) == 1 else LSTMState(*parts)


class GraphCache:
    """CUDA graphs of a time loop, one per key (shapes, dtypes, flags), the least recently used dropped first.

    A loop written into preallocated buffers launches the same kernels with the same arguments on
    every call of the same shape, so it can be captured once and replayed: one launch per call
    instead of two or three per step. ``run(key, loop, inputs)`` copies ``inputs`` into the graph's
    static inputs, replays, and returns clones of the static outputs (the next replay overwrites them).
    Only for CUDA tensors, and not under the interpreter or inside a graph the caller captures; there
    ``loop`` just runs.
    """

    def __init__(self, size: int = 16):
        self.size = size
        self.graphs: OrderedDict = OrderedDict()

    def run(self, key, loop, inputs: list[Tensor | None]) -> list[Tensor]:
        interpreted = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")  # runs on host copies: no graph
        if not inputs[0].is_cuda or interpreted or torch.cuda.is_current_stream_capturing():
            return loop(*inputs)
        key = (key, inputs[0].device)
        entry = self.graphs.get(key)
        if entry is None:
            static_in = [None if x is None else x.detach().clone() for x in inputs]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up: compiles the kernels and settles cuBLAS's workspace
                loop(*static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = loop(*static_in)
            entry = (graph, static_in, static_out)
            self.graphs[key] = entry
            if len(self.graphs) > self.size:
                self.graphs.popitem(last=False)
        else:
            self.graphs.move_to_end(key)
        graph, static_in, static_out = entry
        for dst, src in zip(static_in, inputs):
            if dst is not None:
                dst.copy_(src)
        graph.replay()
        return [x.clone() for x in static_out]


GRAPHS = GraphCache()


@triton.jit
def sigmoid(x):
    """The logistic function, exact on both tails: exp of a non-positive number only."""
    e = tl.exp(-tl.abs(x))
    return tl.where(x >= 0, 1 / (1 + e), e / (1 + e))


@triton.jit
def tanh(x):
    """tanh through exp(-2|x|), so it neither overflows nor loses digits near 0 beyond a few ulp."""
    e = tl.exp(-2 * tl.abs(x))
    y = (1 - e) / (1 + e)
    return tl.where(x >= 0, y, -y)


@triton.jit
def keeps(keep_ptr, offs, valid, running, ZONE: tl.constexpr):
    """Where a unit keeps its state: its zoneout mask (which includes the steps past the end), or past the end."""
    if ZONE:
        return tl.load(keep_ptr + offs, mask=valid, other=1) != 0
    return valid & (running == 0)
