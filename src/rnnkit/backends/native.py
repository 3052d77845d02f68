"""The native backend: torch's own fused kernels (oneDNN on CPU, cuDNN on GPU).

Runs ``rnn_tanh``, ``rnn_relu``, ``lstm`` (with projection) and ``gru`` exactly as
torch.nn does, through the same ``torch._VF`` entry points, on the layer's parameters in
torch's flat order. Variable lengths go through a PackedSequence, as with torch.nn.
"""

from __future__ import annotations

import torch
from torch import _VF, Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..cells import LSTMState, State

NAME = "native"

_KERNELS = {"rnn_tanh": _VF.rnn_tanh, "rnn_relu": _VF.rnn_relu, "lstm": _VF.lstm, "gru": _VF.gru}


def supports(problem) -> str | None:
    if problem.cell not in _KERNELS:
        return f"torch has no kernel for cell {problem.cell!r} (it has {', '.join(_KERNELS)})"
    if problem.cell_options:
        return f"torch's kernels take no cell options, got {dict(problem.cell_options)}"
    if problem.regularizers:
        return f"torch's kernels have no {', '.join(problem.regularizers)}"
    if problem.device not in ("cpu", "cuda"):
        return f"torch's RNN kernels run on cpu and cuda, not {problem.device}"
    if (problem.cell == "lstm" and problem.device == "cpu" and problem.autocast == torch.bfloat16
            and not torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        # torch.nn.LSTM itself fails here: oneDNN has no bf16 LSTM primitive without AVX-512 BF16 / AMX
        return "torch's LSTM kernel cannot run under bfloat16 autocast on this CPU (oneDNN needs AVX-512 BF16 or AMX)"
    return None


def run(layer, x: Tensor, lengths: Tensor | None, state: State) -> tuple[Tensor, State]:
    kernel = _KERNELS[layer.cell.name]
    flat_weights = [w for k in range(layer.num_layers) for d in range(layer.num_directions)
                    for w in layer.weights(k, d).values()]
    hx = (state.h, state.c) if isinstance(state, LSTMState) else state
    args = (flat_weights, layer.bias, layer.num_layers, layer.dropout, layer.training,
            layer.num_directions == 2)
    T = x.shape[0]
    if lengths is None:
        result = kernel(x, hx, *args, False)
        out, final = result[0], result[1:]
    else:
        packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        hx = _permute(hx, packed.sorted_indices)
        result = kernel(packed.data, packed.batch_sizes, hx, *args)
        out, _ = pad_packed_sequence(
            packed._replace(data=result[0]), total_length=T
        )  # (T, B, D*R), original batch order
        final = _permute(tuple(result[1:]), packed.unsorted_indices)
    if isinstance(state, LSTMState):
        return out, LSTMState(*final)
    return out, final[0]


def _permute(hx, index: Tensor):
    """Reorder the batch dimension (dim 1) of a state tensor or a tuple of them."""
    if isinstance(hx, Tensor):
        return hx.index_select(1, index)
    return tuple(h.index_select(1, index) for h in hx)
