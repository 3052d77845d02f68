"""The demo: an LSTM learns to continue noisy waves, and its loss falls as you watch.

Until the character language model task lands, ``make demo`` (``rnnkit demo``) runs this:
each sequence is a sum of two sine waves with random frequency, phase and amplitude,
plus noise; a 1-layer rnnkit LSTM reads it and predicts the next value at every step.
The copy-last-value forecast is printed beside it as the baseline to beat.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .compat import LSTM


@dataclass
class DemoConfig:
    steps: int = 1000  # optimizer steps; below the baseline after ~25, near its plateau by ~1000
    batch_size: int = 32
    length: int = 60  # time steps per sequence
    hidden_size: int = 48
    lr: float = 1e-2  # Adam; high because the model is small and the data is clean
    noise: float = 0.05  # std of the noise added to each wave value
    seed: int = 0
    log_every: int = 100


def make_waves(batch: int, length: int, noise: float, gen: torch.Generator) -> Tensor:
    """(B, T+1, 1) sums of two sines with random frequency, phase and amplitude, plus noise."""
    t = torch.arange(length + 1, dtype=torch.float32)  # (T+1,)
    freq = torch.empty(batch, 2, 1).uniform_(0.05, 0.4, generator=gen)
    phase = torch.empty(batch, 2, 1).uniform_(0, 2 * math.pi, generator=gen)
    amp = torch.empty(batch, 2, 1).uniform_(0.3, 1.0, generator=gen)
    waves = (amp * torch.sin(freq * t + phase)).sum(1)  # (B, T+1)
    return (waves + noise * torch.randn(waves.shape, generator=gen)).unsqueeze(-1)


class NextValue(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.rnn = LSTM(1, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)  # (B, T, H)
        return self.head(out)  # (B, T, 1)


def run_demo(config: DemoConfig | None = None, echo=print) -> dict[str, float]:
    """Train the demo model; return the first and last losses and the baseline's."""
    config = config or DemoConfig()
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = NextValue(config.hidden_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    held_out = make_waves(256, config.length, config.noise, torch.Generator().manual_seed(config.seed + 1))
    baseline = float(nn.functional.mse_loss(held_out[:, :-1], held_out[:, 1:]))

    def evaluate() -> float:
        with torch.no_grad():
            return float(nn.functional.mse_loss(model(held_out[:, :-1]), held_out[:, 1:]))

    echo(f"rnnkit demo: an LSTM (hidden {config.hidden_size}) learns to continue noisy waves, "
         f"{config.steps} steps of batch {config.batch_size} x {config.length} time steps")
    echo(f"baseline (repeat the last value): held-out MSE {baseline:.4f}; "
         f"the noise alone costs {config.noise ** 2:.4f}")
    first = evaluate()
    echo(f"step {0:4d}  held-out MSE {first:.4f}")
    start = time.perf_counter()
    for step in range(1, config.steps + 1):
        waves = make_waves(config.batch_size, config.length, config.noise, gen)  # (B, T+1, 1)
        loss = nn.functional.mse_loss(model(waves[:, :-1]), waves[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % config.log_every == 0 or step == config.steps:
            echo(f"step {step:4d}  train MSE {loss.item():.4f}  held-out MSE {evaluate():.4f}  "
                 f"({time.perf_counter() - start:.1f} s)")
    last = evaluate()
    verdict = "beats" if last < baseline else "does not beat"
    echo(f"held-out MSE fell from {first:.4f} to {last:.4f}; the LSTM {verdict} the baseline's {baseline:.4f}")
    return {"first_mse": first, "last_mse": last, "baseline_mse": baseline}
