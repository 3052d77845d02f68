"""The speech front end: reading, resampling, log-mel features, normalization, SpecAugment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnkit.audio import (
    AudioError,
    LogMel,
    StreamingLogMel,
    WaveAugment,
    mel_filterbank,
    normalize,
    read_audio,
    resample,
    spec_augment,
)
from rnnkit.audio.features import hz_to_mel, mel_to_hz

soundfile = pytest.importorskip("soundfile", reason="reading audio needs soundfile (the tasks extra)")


def tone(freq: float, rate: int, seconds: float) -> torch.Tensor:
    return torch.sin(2 * math.pi * freq * torch.arange(round(rate * seconds), dtype=torch.float64) / rate)


@pytest.mark.parametrize("orig,new", [(8000, 16000), (16000, 8000), (22050, 16000), (44100, 8000)])
def test_resample_a_tone_gives_the_same_tone_at_the_new_rate(orig, new):
    x = tone(440.0, orig, 0.5)
    y = resample(x, orig, new)
    assert y.shape == (math.ceil(len(x) * new / orig),)
    expected = tone(440.0, new, 0.5)[: len(y)]
    interior = slice(100, len(y) - 100)  # the ends see the zero padding
    assert float((y[interior] - expected[interior]).abs().max()) < 2e-3


def test_resample_removes_what_the_new_rate_cannot_carry():
    x = tone(6000.0, 16000, 0.5)  # above the 4 kHz Nyquist frequency of 8 kHz
    y = resample(x, 16000, 8000)
    assert float(y[100:-100].abs().max()) < 1e-2


def test_resample_batches_channels_and_keeps_equal_rates():
    x = torch.randn(2, 1000)
    assert torch.equal(resample(x, 8000, 8000), x)
    y = resample(x, 8000, 12000)
    assert y.shape == (2, 1500)
    assert torch.allclose(y[1], resample(x[1], 8000, 12000), atol=1e-6)


def test_resample_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="orig_rate must be a positive int"):
        resample(torch.zeros(10), 0, 8000)
    with pytest.raises(ValueError, match="filter phases"):
        resample(torch.zeros(10), 44100, 16001)


def test_mel_scale_round_trips_and_has_its_anchor():
    f = torch.tensor([0.0, 700.0, 1000.0, 8000.0], dtype=torch.float64)
    assert torch.allclose(mel_to_hz(hz_to_mel(f)), f)
    assert float(hz_to_mel(torch.tensor(700.0))) == pytest.approx(2595 * math.log10(2))


def test_mel_filters_are_triangles_between_their_points():
    rate, n_fft, n_mels = 16000, 512, 10
    fb = mel_filterbank(n_fft // 2 + 1, rate, n_mels).double()  # (257, 10)
    freqs = torch.linspace(0, rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    points = mel_to_hz(torch.linspace(0, float(hz_to_mel(torch.tensor(rate / 2.0))), n_mels + 2, dtype=torch.float64))
    for m in range(n_mels):
        lo, mid, hi = points[m], points[m + 1], points[m + 2]
        expected = torch.clamp(torch.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), min=0)
        assert torch.allclose(fb[:, m], expected, atol=1e-6)
        assert (fb[:, m][(freqs <= lo) | (freqs >= hi)] == 0).all()
    with pytest.raises(ValueError, match="f_max"):
        mel_filterbank(257, 16000, 10, f_max=9000)


def test_log_mel_finds_a_tone_in_the_right_band():
    logmel = LogMel(16000, n_mels=40)
    features = logmel(tone(1000.0, 16000, 0.3).float())
    assert features.shape == (logmel.frames(4800), 40)
    band = int(features[5:-5].mean(0).argmax())
    points = mel_to_hz(torch.linspace(0, float(hz_to_mel(torch.tensor(8000.0))), 42))
    assert points[band] < 1000 < points[band + 2]


@pytest.mark.parametrize("chunk", [1, 37, 160, 401, 5000])
def test_streaming_log_mel_equals_the_whole_signal(chunk):
    logmel = LogMel(8000, n_mels=20)
    x = torch.randn(3001)
    stream = StreamingLogMel(logmel)
    frames = torch.cat([stream.push(c) for c in x.split(chunk)] + [stream.finish()])
    assert frames.shape == logmel(x).shape
    assert torch.allclose(frames, logmel(x), atol=1e-4)
    with pytest.raises(ValueError, match="after finish"):
        stream.push(x[:10])


def test_normalize_gives_each_band_mean_zero_and_std_one():
    x = torch.randn(50, 8) * torch.arange(1, 9) + 3
    y = normalize(x)
    assert torch.allclose(y.mean(0), torch.zeros(8), atol=1e-5)
    assert torch.allclose(y.std(0, unbiased=False), torch.ones(8), atol=1e-3)


def test_spec_augment_masks_bands_and_frames_and_is_seeded():
    x = torch.ones(100, 40)
    a = spec_augment(x, 2, 10, 2, 20, generator=torch.Generator().manual_seed(0))
    b = spec_augment(x, 2, 10, 2, 20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert torch.equal(x, torch.ones(100, 40))  # a copy
    zero_bands = int((a == 0).all(0).sum())
    zero_frames = int((a == 0).all(1).sum())
    assert zero_bands <= 20 and zero_frames <= 40
    assert torch.equal(spec_augment(x, 0, 10, 0, 20), x)


def test_read_audio_reads_averages_and_resamples(tmp_path):
    left, right = tone(300.0, 8000, 0.25), tone(500.0, 8000, 0.25)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left.numpy(), right.numpy()], 1), 8000, subtype="FLOAT")
    wave, rate = read_audio(path)
    assert rate == 8000 and wave.dtype == torch.float32
    assert torch.allclose(wave.double(), (left + right) / 2, atol=1e-6)
    wave16, rate16 = read_audio(path, 16000)
    assert rate16 == 16000 and len(wave16) == 2 * len(wave)
    flac = tmp_path / "mono.flac"
    soundfile.write(flac, left.numpy(), 8000, subtype="PCM_16")
    assert torch.allclose(read_audio(flac)[0].double(), left, atol=1e-4)


def test_read_audio_names_the_file_it_cannot_use(tmp_path):
    with pytest.raises(AudioError, match="no such audio file"):
        read_audio(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match="junk.wav: not a readable audio file"):
        read_audio(junk)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0), 8000)
    with pytest.raises(AudioError, match="empty.wav: the audio file has no samples"):
        read_audio(empty)
    odd = tmp_path / "odd.wav"
    soundfile.write(odd, np.zeros(100), 44100)
    with pytest.raises(AudioError, match="odd.wav: cannot resample 44100 Hz to 16001 Hz"):
        read_audio(odd, 16001)


@pytest.mark.parametrize("seed", range(3))
def test_wave_augment_adds_the_noise_before_the_band_limit(seed):
    """Telephone audio has nothing above its band, noise included. Noise added after the band-limit (the order
    before this test) leaves 0.6-4% of the power above 4.2 kHz here (white or pink noise at 10 dB SNR);
    noise before it leaves the resampler's leakage, about 0.014%."""
    wave = tone(1000.0, 16000, 1.0).float()
    augment = WaveAugment(speeds=(1.0,), band_rates=(8000,), band_probability=1.0, gain_db=0.0,
                          noise_probability=1.0, snr_db=(10.0, 10.0))
    out = augment(wave, 16000, torch.Generator().manual_seed(seed)).double()
    power = torch.fft.rfft(out).abs().square()  # (N // 2 + 1,)
    freqs = torch.fft.rfftfreq(len(out), 1 / 16000)
    assert float(power[freqs > 4200].sum() / power.sum()) < 1e-3
    noise = out - wave.double()  # the noise is there: 10 dB below the tone, of which the band keeps 40-95%
    assert 0.03 < float(noise.square().mean() / wave.double().square().mean()) < 0.11


def test_wave_augment_band_limits_changes_speed_and_gain_and_is_seeded():
    """A band-limit that let a 3 kHz tone through a 2 kHz band, a speed applied the wrong way round (longer
    when faster), or a gain outside its range would fail."""
    wave = tone(3000.0, 16000, 0.5).float()
    quiet = WaveAugment(speeds=(1.0,), band_rates=(4000,), band_probability=1.0, gain_db=0.0, noise_probability=0.0)
    out = quiet(wave, 16000, torch.Generator().manual_seed(0))
    assert out.shape == wave.shape and float(out[400:-400].abs().max()) < 0.01
    faster = WaveAugment(speeds=(1.25,), band_probability=0.0, gain_db=6.0, noise_probability=0.0)
    out = faster(wave, 16000, torch.Generator().manual_seed(0))
    assert len(out) == 6400
    assert 0.5 - 1e-3 < float(out.abs().max()) / float(wave.abs().max()) < 2 + 1e-3
    noisy = WaveAugment()
    first, again = (noisy(wave, 16000, torch.Generator().manual_seed(1)) for _ in range(2))
    assert torch.equal(first, again)
