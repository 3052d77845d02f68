"""Log-mel spectrograms: ``torch.stft``, a triangular mel filterbank, a log; per-utterance normalization.

The mel scale is HTK's, ``mel(f) = 2595 log10(1 + f / 700)``. Filter ``m`` of ``n_mels`` rises
linearly from the frequency of mel point ``m`` to that of point ``m + 1`` and falls to point
``m + 2``, the ``n_mels + 2`` points evenly spaced in mel between ``f_min`` and ``f_max`` (no
area normalization): torchaudio's ``melscale_fbanks(..., norm=None, mel_scale="htk")``.

    power[t, k]  = |STFT(x)[k, t]|^2                     Hann window of n_fft samples, hop hop_length
    logmel[t, m] = log(max(sum_k power[t, k] fb[k, m], floor))

The signal is padded with ``n_fft // 2`` zeros at each end (not reflected, as ``torch.stft``'s
``center=True`` would), so frame ``t`` covers samples ``[t hop - n_fft/2, t hop + n_fft/2)``
of the signal and a stream computed chunk by chunk (``StreamingLogMel``) gives the same frames.
"""


from __future__ import annotations

import torch
from torch import Tensor, nn


def hz_to_mel(f: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, sample_rate: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> Tensor:
    """Triangular filters, shape (n_freqs, n_mels), for the ``n_freqs = n_fft // 2 + 1`` STFT bins."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2 = {sample_rate / 2:g} Hz, "
                         f"got f_min={f_min:g}, f_max={f_max:g}")
    freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)  # (n_freqs,)
    mels = torch.linspace(float(hz_to_mel(torch.tensor(f_min))), float(hz_to_mel(torch.tensor(f_max))),
                          n_mels + 2, dtype=torch.float64)
    points = mel_to_hz(mels)  # (n_mels + 2,) Hz
    gaps = points[1:] - points[:-1]  # (n_mels + 1,)
    slopes = points[None, :] - freqs[:, None]  # (n_freqs, n_mels + 2)
    rising = -slopes[:, :-2] / gaps[:-1]  # (n_freqs, n_mels)
    falling = slopes[:, 2:] / gaps[1:]
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


class LogMel(nn.Module):
    """Waveform (N,) or (B, N) at ``sample_rate`` -> log-mel features (frames, n_mels) or (B, frames, n_mels).

    ``frames = 1 + N // hop_length`` (``torch.stft`` with ``center=True``). Defaults: 25 ms
    windows every 10 ms at 16 kHz, 80 bands.
    """

    def __init__(self, sample_rate: int = 16000, n_mels: int = 80, window_ms: float = 25.0, hop_ms: float = 10.0,
                 f_min: float = 0.0, f_max: float | None = None, floor: float = 1e-6) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.n_fft = round(sample_rate * window_ms / 1000)
        self.hop_length = round(sample_rate * hop_ms / 1000)
        if self.n_fft < 2 or self.hop_length < 1:
            raise ValueError(f"window_ms={window_ms:g} and hop_ms={hop_ms:g} give {self.n_fft} and "
                             f"{self.hop_length} samples at {sample_rate} Hz; need at least 2 and 1")
        self.n_mels = n_mels
        self.floor = floor
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.register_buffer("filters", mel_filterbank(self.n_fft // 2 + 1, sample_rate, n_mels, f_min, f_max),
                             persistent=False)

    def frames(self, samples: int) -> int:
        """How many feature frames ``samples`` samples give."""
        return 1 + samples // self.hop_length

    def forward(self, wave: Tensor) -> Tensor:
        if wave.dim() not in (1, 2):
            raise ValueError(f"wave must be (N,) or (B, N), got shape {tuple(wave.shape)}")
        half = self.n_fft // 2
        return self.frames_of(torch.nn.functional.pad(wave.float(), (half, half)))

    def frames_of(self, padded: Tensor) -> Tensor:
        """Log-mel frames of an already padded signal (..., N): every whole window, no more padding."""
        spec = torch.stft(padded, self.n_fft, self.hop_length, window=self.window, center=False,
                          return_complex=True)  # (..., n_fft // 2 + 1, frames)
        power = spec.real.square() + spec.imag.square()
        mel = power.transpose(-1, -2) @ self.filters  # (..., frames, n_mels)
        return torch.log(torch.clamp(mel, min=self.floor))


class StreamingLogMel:
    """``LogMel`` over a signal that arrives in chunks: ``push(chunk)`` returns the frames now complete,
    ``finish()`` the rest; concatenated they equal ``LogMel(whole signal)``."""

    def __init__(self, logmel: LogMel) -> None:
        self.logmel = logmel
        self.buffer = torch.zeros(logmel.n_fft // 2)  # the left padding
        self.done = False

    def _take(self) -> Tensor:
        n_fft, hop = self.logmel.n_fft, self.logmel.hop_length
        count = 0 if len(self.buffer) < n_fft else 1 + (len(self.buffer) - n_fft) // hop
        if count == 0:
            return torch.zeros(0, self.logmel.n_mels)
        frames = self.logmel.frames_of(self.buffer[: (count - 1) * hop + n_fft])
        self.buffer = self.buffer[count * hop:]
        return frames  # (count, n_mels)

    def push(self, chunk: Tensor) -> Tensor:
        if self.done:
            raise ValueError("push() after finish(): start a new StreamingLogMel for a new stream")
        if chunk.dim() != 1:
            raise ValueError(f"a chunk must be 1-D samples (N,), got shape {tuple(chunk.shape)}")
        self.buffer = torch.cat([self.buffer, chunk.float()])
        return self._take()

    def finish(self) -> Tensor:
        self.done = True
        self.buffer = torch.cat([self.buffer, torch.zeros(self.logmel.n_fft // 2)])  # the right padding
        return self._take()


def normalize(features: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-utterance normalization: each band (last dim) to mean 0 and standard deviation 1 over frames (dim -2)."""
    mean = features.mean(dim=-2, keepdim=True)
    std = features.std(dim=-2, keepdim=True, unbiased=False) if features.shape[-2] > 1 else torch.ones_like(mean)
    return (features - mean) / (std + eps)


__all__ = ["LogMel", "StreamingLogMel", "hz_to_mel", "mel_filterbank", "mel_to_hz", "normalize"]
