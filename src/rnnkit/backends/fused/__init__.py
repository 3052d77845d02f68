"""The fused backend: one ``torch.autograd.Function`` per cell family, with a hand-derived BPTT.

The layer's driver (``rnnkit.driver.run_stack``) still does, with autograd, what is one large
operation per layer and direction: the input projection ``W_ih x + b_ih`` for all steps (so
dW_ih is one GEMM), the reversal of the reverse direction, dropout between layers. Each
family's ``recurrence(cell, gx, state, weights, lengths, noise=None) -> (out, state)`` replaces
only the time loop, with the same contract as ``driver.time_loop``:

    gx       (T, B, G)   the input projection, G = gates * H (layernorm_lstm: the raw x W_ih^T, before
                         LN_ih and b_ih; ``lstm.input_projection``; lstm, peephole_lstm, cifg_lstm in float32
                         inference: ``lstm.TiledInput(x)``, projected inside the C++ loop, see
                         ``lstm.tiled_projection``)
    state    the initial state of this layer and direction: (B, R) or LSTMState((B, R), (B, H))
    weights  the layer's parameters for this layer and direction, under the cell's names
    lengths  (B,) int64 on gx's device, or None: step t of sequence b runs while t < lengths[b];
             after its end a sequence keeps its state and outputs zeros
    noise    ``regularize.StepNoise`` or None: the hidden-dropout mask (B, R) on h_{t-1} in the
             recurrent products, and zoneout's bool masks (T, B, size) per state part, True where
             a unit keeps s_{t-1}; the step then outputs its zoned-out h
    out      (T, B, R)   and the state after each sequence's last step

Forward: per step one recurrent GEMM (``addmm``) and the pointwise gates, saving what the
backward needs. Backward: per step (last to first) the pointwise derivatives and one GEMM for
dh_{t-1}; then the weight gradients as one GEMM each over all T*B rows. Each module's docstring
gives its derivatives, with lengths, hidden dropout and zoneout; with none of them a kernel runs
the same ops per step as without the ``noise`` argument.
"""

from __future__ import annotations

from torch import Tensor

from ...cells import State
from ...driver import run_stack
from . import elman, gru, indrnn, lstm, minimal

NAME = "fused"

# cell name -> recurrence function
KERNELS = {
    "rnn_tanh": elman.recurrence,
    "rnn_relu": elman.recurrence,
    "lstm": lstm.recurrence,
    "peephole_lstm": lstm.recurrence,
    "layernorm_lstm": lstm.recurrence,
    "cifg_lstm": lstm.recurrence,
    "gru": gru.recurrence,
    "cho_gru": gru.recurrence,
    "mingru": minimal.recurrence,
    "minlstm": minimal.recurrence,
    "indrnn": indrnn.recurrence,
}


def supports(problem) -> str | None:
    if problem.cell not in KERNELS:
        return f"no fused kernel for cell {problem.cell!r} yet (fused runs {', '.join(KERNELS)})"
    return None  # every regularizer: the driver applies the rest, the kernels hidden dropout and zoneout


# cell name -> input projection, where a kernel takes gx other than ``cell.input_projection``'s
PROJECTIONS = {"layernorm_lstm": lstm.input_projection, "lstm": lstm.tiled_projection,
               "peephole_lstm": lstm.tiled_projection, "cifg_lstm": lstm.tiled_projection}


def run(layer, x: Tensor, lengths: Tensor | None, state: State) -> tuple[Tensor, State]:
    name = layer.cell.name
    return run_stack(layer, x, lengths, state, KERNELS[name], PROJECTIONS.get(name))
