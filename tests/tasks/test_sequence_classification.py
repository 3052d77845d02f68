"""The sequence-classification pieces classify, speech and video share (rnnkit.tasks.sequence_classification)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnkit.recurrent import Recurrent
from rnnkit.tasks.sequence_classification import POOLINGS, confusion, majority, pool, predict_probs, scores


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_pooling_ignores_padding(pooling, cell):
    torch.manual_seed(0)
    rnn = Recurrent(cell, 3, 4, num_layers=2, bidirectional=True).double()
    query = nn.Linear(8, 1, bias=False).double()
    long, short = torch.randn(6, 1, 3, dtype=torch.double), torch.randn(2, 1, 3, dtype=torch.double)
    batch = torch.cat([long, torch.cat([short, torch.full((4, 1, 3), 9.0, dtype=torch.double)])], 1)  # junk pad
    lengths = torch.tensor([6, 2])
    together = pool(pooling, *rnn(batch, lengths=lengths), lengths, 2, query)  # (2, 8)
    for j, x in enumerate((long, short)):
        alone = pool(pooling, *rnn(x, lengths=lengths[j : j + 1]), lengths[j : j + 1], 2, query)
        torch.testing.assert_close(together[j], alone[0], rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="pooling must be one of last, mean, max, attention, got 'sum'"):
        pool("sum", *rnn(long), torch.tensor([6]), 2, None)


class Tiny(nn.Module):
    """Logits = (sum of the valid steps, -sum): label 0 for a positive sum; records the batch sizes it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(1, 2)
        self.seen = []

    def forward(self, x, lengths):
        self.seen.append(x.shape[1])
        total = x.float().sum(0)  # (B,)
        return torch.stack([total, -total], -1)


def test_predict_probs_keeps_the_input_order_and_the_mode():
    model = Tiny().train()
    sequences = [[1] * 5, [-1], [2, 2], [-3, -3, -3, -3], [1]]
    probs = predict_probs(model, sequences, batch_size=2)
    assert probs.argmax(-1).tolist() == [0, 1, 0, 1, 0]  # each in its own place though batched by length
    assert model.training and model.seen == [2, 2, 1]


def test_scores_and_majority():
    matrix = confusion(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 1]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    result = scores(matrix, majority([0, 0, 1, 2]))
    assert result["accuracy"] == 0.5 and result["majority_accuracy"] == 0.5 and result["n"] == 4
    assert result["macro_f1"] == pytest.approx((2 / 3 + 2 / 4 + 0) / 3)
    assert majority([2, 1, 1, 2]) == 1  # a tie goes to the smaller id
