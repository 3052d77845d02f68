"""Band-limited resampling between integer sample rates (polyphase windowed sinc).

For rates reduced by their gcd to ``orig -> new``, output sample ``j`` is

    y[j] = sum_k x[k] * h(j * orig / new - k),
    h(t) = (f_c / orig) * sinc(f_c t / orig) * w(t),   f_c = rolloff * min(orig, new)

with a Hann window ``w`` over ``width`` zero crossings each side: the same kernel as
torchaudio's ``sinc_interp_hann`` (width 6, rolloff 0.99). The ``new`` phases become the
output channels of one strided ``conv1d``, so the cost grows with ``new * orig``; rates
whose reduced ratio needs more than ``MAX_PHASES`` phases are refused rather than run slowly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOWPASS_WIDTH = 6  # zero crossings of the sinc kept on each side
ROLLOFF = 0.99  # cut-off as a fraction of the lower Nyquist frequency
MAX_PHASES = 2000  # orig + new after the gcd: 44100 -> 16000 is 441 + 160


def resample(wave: Tensor, orig_rate: int, new_rate: int) -> Tensor:
    """``wave`` (N,) or (C, N) at ``orig_rate`` Hz, resampled to ``new_rate`` Hz: (ceil(N new/orig),) or (C, ...)."""
    _check(orig_rate, new_rate)
    if orig_rate == new_rate:
        return wave
    kernel = Kernel(orig_rate, new_rate, wave.dtype)
    shape = wave.shape
    x = wave.reshape(-1, 1, shape[-1])  # (C, 1, N)
    y = kernel(F.pad(x, (kernel.width, kernel.width + kernel.orig)))  # (C, frames * new)
    length = math.ceil(kernel.new * shape[-1] / kernel.orig)
    return y[:, :length].reshape(*shape[:-1], length)


def _check(orig_rate: int, new_rate: int) -> None:
    for name, rate in (("orig_rate", orig_rate), ("new_rate", new_rate)):
        if not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"{name} must be a positive int (Hz), got {rate!r}")


class Kernel:
    """The ``new`` phases of the windowed sinc for ``orig_rate -> new_rate`` (reduced by their gcd to
    ``orig -> new``): called on a padded signal (C, 1, N) it gives every output frame whose ``2 width + orig``
    input samples are there, (C, frames * new), frame ``i`` starting at input sample ``i orig``."""

    def __init__(self, orig_rate: int, new_rate: int, dtype: torch.dtype = torch.float32) -> None:
        _check(orig_rate, new_rate)
        g = math.gcd(orig_rate, new_rate)
        orig, new = orig_rate // g, new_rate // g
        if orig + new > MAX_PHASES:
            raise ValueError(f"cannot resample {orig_rate} Hz to {new_rate} Hz: the ratio reduces to {orig}/{new}, "
                             f"more than {MAX_PHASES} filter phases; convert the file to a common rate first")
        cutoff = ROLLOFF * min(orig, new)
        width = math.ceil(LOWPASS_WIDTH * orig / cutoff)
        taps = torch.arange(-width, width + orig, dtype=torch.float64) / orig  # (K,)
        t = (torch.arange(0, -new, -1, dtype=torch.float64)[:, None] / new + taps[None]) * cutoff  # (new, K)
        t = t.clamp(-LOWPASS_WIDTH, LOWPASS_WIDTH)
        window = torch.cos(t * math.pi / LOWPASS_WIDTH / 2) ** 2
        t = t * math.pi
        sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t.where(t != 0, torch.ones_like(t)))
        self.weight = (sinc * window * cutoff / orig).to(dtype)[:, None, :]  # (new, 1, K)
        self.orig, self.new, self.width = orig, new, width
        self.size = 2 * width + orig  # K: input samples per output frame

    def __call__(self, padded: Tensor) -> Tensor:
        y = F.conv1d(padded, self.weight, stride=self.orig)  # (C, new, frames)
        return y.transpose(1, 2).reshape(padded.shape[0], -1)  # (C, frames * new), phases interleaved


class StreamingResampler:
    """``resample`` over a signal that arrives in chunks: ``push(chunk)`` returns the output samples now
    complete, ``finish()`` the rest; concatenated they equal ``resample(whole signal)`` (up to float rounding).
    Each output frame waits for ``width + orig`` input samples past its start, a few milliseconds."""

    def __init__(self, orig_rate: int, new_rate: int) -> None:
        self.kernel = Kernel(orig_rate, new_rate)
        self.buffer = torch.zeros(self.kernel.width)  # the left padding
        self.received = self.emitted = 0

    def _take(self) -> Tensor:
        k = self.kernel
        frames = 0 if len(self.buffer) < k.size else 1 + (len(self.buffer) - k.size) // k.orig
        if frames == 0:
            return torch.zeros(0)
        y = k(self.buffer[: (frames - 1) * k.orig + k.size][None, None])[0]  # (frames * new,)
        self.buffer = self.buffer[frames * k.orig:]
        self.emitted += len(y)
        return y

    def push(self, chunk: Tensor) -> Tensor:
        if chunk.dim() != 1:
            raise ValueError(f"a chunk must be 1-D samples (N,), got shape {tuple(chunk.shape)}")
        self.buffer = torch.cat([self.buffer, chunk.float()])
        self.received += len(chunk)
        return self._take()

    def finish(self) -> Tensor:
        self.buffer = torch.cat([self.buffer, torch.zeros(self.kernel.width + self.kernel.orig)])  # right padding
        length = math.ceil(self.kernel.new * self.received / self.kernel.orig)
        before = self.emitted
        return self._take()[: length - before]
