"""The learning-rate schedule: linear warmup, then cosine decay to a floor.

A pure function of the step, so a resumed run needs only the step and the total to be on
the same schedule; nothing else is stored.
"""

from __future__ import annotations

import math


def lr_at(step: int, total: int | None, lr: float, warmup_steps: int, min_lr_ratio: float) -> float:
    r"""The learning rate of optimizer step ``step`` (0-based) of ``total``.

    .. math::
        \eta_s = \eta \frac{s + 1}{w} \quad (s < w), \qquad
        \eta_s = \eta \left(\rho + (1 - \rho) \frac{1 + \cos(\pi p)}{2}\right), \quad
        p = \frac{s - w}{\max(1, N - w)} \quad (s \ge w)

    with w = warmup_steps, N = total, rho = min_lr_ratio. While ``total`` is unknown (a time
    budget still measuring its speed) the rate after warmup is the peak ``lr``.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if total is None:
        return lr
    progress = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
