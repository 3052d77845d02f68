"""The one time-loop driver (``rnnkit.driver``): the loop against the cell stepped by hand, the masks.

The layers' own tests (test_cells, test_conv, test_torch_parity, the backends' parity tests) run
the driver through ``Recurrent`` and ``ConvRecurrent``; these tests pin its parts directly.
"""

from __future__ import annotations

import torch

import rnnkit
from rnnkit import driver
from rnnkit.cells import LSTMState, make_cell

from .helpers import assert_close

DTYPE = torch.float64


def test_time_loop_equals_stepping_the_cell_by_hand_with_lengths():
    # catches: a mask off by one step, a finished sequence that keeps updating, or outputs past the end not zero
    torch.manual_seed(0)
    cell = make_cell("lstm")
    T, B, I, H = 5, 3, 4, 6
    w = {name: torch.randn(shape, dtype=DTYPE) for name, shape in cell.parameter_shapes(I, H, 0, True).items()}
    gx = cell.input_projection(torch.randn(T, B, I, dtype=DTYPE), w)  # (T, B, 4H)
    s0 = LSTMState(torch.randn(B, H, dtype=DTYPE), torch.randn(B, H, dtype=DTYPE))
    lengths = torch.tensor([5, 2, 4])
    out, final = driver.time_loop(cell, gx, s0, w, lengths)
    for b in range(B):
        state = LSTMState(s0.h[b : b + 1], s0.c[b : b + 1])
        for t in range(int(lengths[b])):
            h, state = cell.step(gx[t, b : b + 1], state, w)
            assert_close(f"out[{t}, {b}]", h[0], out[t, b], 1e-12)
        assert torch.all(out[int(lengths[b]) :, b] == 0), f"sequence {b} has outputs past its length"
        assert_close(f"h_n[{b}]", state.h[0], final.h[b], 1e-12)
        assert_close(f"c_n[{b}]", state.c[0], final.c[b], 1e-12)


def test_time_loop_keeps_every_state_as_a_graph_node():
    # catches: ``states`` holding copies (no gradient path) or the pre-mask state instead of the carried one
    cell = make_cell("rnn_tanh")
    w = {name: torch.randn(shape, dtype=DTYPE) for name, shape in cell.parameter_shapes(2, 3, 0, True).items()}
    gx = cell.input_projection(torch.randn(4, 2, 2, dtype=DTYPE), w).requires_grad_()
    states = []
    out, final = driver.time_loop(cell, gx, torch.zeros(2, 3, dtype=DTYPE), w, torch.tensor([4, 2]), states=states)
    assert len(states) == 4
    assert states[-1] is final
    assert torch.equal(states[3][1], states[1][1]), "a finished sequence's state must be carried"
    (grad,) = torch.autograd.grad(out[-1].sum(), states[2])
    assert grad[0].abs().sum() > 0 and torch.all(grad[1] == 0)  # sequence 1 ended at step 2: no path from out[3]


def test_reverse_within_flips_each_sequence_within_its_length_for_any_trailing_shape():
    # catches: a reversal over all T (ignores lengths), or one that moves the padding, on (T, B, C, H, W)
    T, B = 4, 2
    x = torch.arange(T * B, dtype=DTYPE).view(T, B, 1, 1, 1).expand(T, B, 2, 3, 3).contiguous()
    got = driver.reverse_within(x, torch.tensor([2, 4]))
    assert got[:, 0, 0, 0, 0].tolist() == [2.0, 0.0, 4.0, 6.0]  # first two reversed, padding in place
    assert got[:, 1, 1, 2, 2].tolist() == [7.0, 5.0, 3.0, 1.0]
    assert torch.equal(driver.reverse_within(got, torch.tensor([2, 4])), x), "the map is its own inverse"
    assert torch.equal(driver.reverse_padded(x, None), x.flip(0))


def test_masks_compile_with_torchscript_as_export_needs():
    # catches: a rewrite of the shared masks that rnnkit.export's scripted loop can no longer call
    scripted_reverse = torch.jit.script(driver.reverse_within)
    scripted_running = torch.jit.script(driver.running_mask)
    x, lengths = torch.randn(5, 3, 4), torch.tensor([5, 1, 3])
    assert torch.equal(scripted_reverse(x, lengths), driver.reverse_within(x, lengths))
    assert scripted_running(lengths, 5).tolist() == [[t < n for n in (5, 1, 3)] for t in range(5)]


def test_dropout_between_only_between_layers_and_in_training():
    # catches: dropout on the last layer's output, or in evaluation mode
    y = torch.ones(2, 3)
    assert torch.equal(driver.dropout_between(y, 0, 2, 1.0, training=True), torch.zeros(2, 3))
    assert driver.dropout_between(y, 1, 2, 1.0, training=True) is y
    assert driver.dropout_between(y, 0, 2, 1.0, training=False) is y


def test_step_layers_equals_one_step_of_the_conv_cell():
    # catches: step_layers reading the wrong layer's state or weights
    torch.manual_seed(1)
    layer = rnnkit.ConvRecurrent("convgru", 2, 3, 3, num_layers=2, dtype=DTYPE)
    x_t = torch.randn(2, 2, 5, 5, dtype=DTYPE)
    h0 = torch.randn(2, 2, 3, 5, 5, dtype=DTYPE)
    y, h = driver.step_layers(layer, x_t, h0)
    out, h_forward = layer(x_t.unsqueeze(0), h0)
    assert_close("y", out[0], y, 1e-12)
    assert_close("h", h_forward, h, 1e-12)
