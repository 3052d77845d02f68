"""Live audio input: 16-bit PCM from a pipe (raw or WAV) in chunks, and the resampler run chunk by chunk."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import torch

from rnnkit.audio import AudioError, PCMReader, StreamingResampler, resample

soundfile = pytest.importorskip("soundfile", reason="writing WAV files needs soundfile (the tasks extra)")


class Trickle(io.RawIOBase):
    """A pipe that hands out at most 3 bytes per read, as a slow writer's pipe does."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        piece, self.data = self.data[: min(n, 3)], self.data[min(n, 3):]
        return piece


SAMPLES = np.array([0, 1, -1, 32767, -32768, 12345, -54, 7, 9, -300, 4], dtype="<i2")


def test_raw_pcm_comes_in_chunks_as_soundfile_would_read_it():
    """A wrong byte order, scale (32767) or a dropped last chunk would fail; so would treating a short read of the
    pipe as its end."""
    reader = PCMReader(Trickle(SAMPLES.tobytes()), None, 16000)
    chunks = list(reader.chunks(4))
    assert [len(c) for c in chunks] == [4, 4, 3] and reader.rate == 16000
    assert torch.equal(torch.cat(chunks), torch.from_numpy(SAMPLES.astype(np.float32) / 32768))
    assert reader.samples_read == len(SAMPLES)


def test_a_wav_header_gives_the_rate_and_is_not_read_as_samples():
    wav = io.BytesIO()
    soundfile.write(wav, SAMPLES, 8000, subtype="PCM_16", format="WAV")
    reader = PCMReader(Trickle(wav.getvalue()), None, 16000)
    assert reader.rate == 8000
    expected, _ = soundfile.read(io.BytesIO(wav.getvalue()), dtype="float32")
    assert torch.equal(torch.cat(list(reader.chunks(5))), torch.from_numpy(expected))


def wav_header(channels: int, bits: int, rate: int = 16000) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    return b"RIFF" + struct.pack("<I", 0) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + \
        struct.pack("<I", 0)


def test_bad_input_is_an_error_that_says_what_came():
    with pytest.raises(AudioError, match=r"ended mid-sample: 7 bytes"):
        list(PCMReader(io.BytesIO(bytes(7)), None, 16000).chunks(2))
    with pytest.raises(AudioError, match=r"2 channel\(s\) of 16-bit samples.*reads 16-bit mono"):
        PCMReader(io.BytesIO(wav_header(2, 16) + bytes(8)), None, 16000)
    with pytest.raises(AudioError, match=r"1 channel\(s\) of 24-bit samples"):
        PCMReader(io.BytesIO(wav_header(1, 24) + bytes(9)), None, 16000)
    with pytest.raises(AudioError, match="the WAV header says 8000 Hz, --input-rate says 16000 Hz"):
        PCMReader(io.BytesIO(wav_header(1, 16, 8000)), 16000, 16000)
    with pytest.raises(AudioError, match="is FLAC"):
        PCMReader(io.BytesIO(b"fLaC" + bytes(8)), None, 16000)


@pytest.mark.parametrize("orig,new", [(8000, 16000), (44100, 16000)])
def test_the_streaming_resampler_equals_resampling_the_whole_signal(orig, new):
    """Frames that wait for samples not yet there, or a wrong tail length, would fail."""
    x = torch.randn(5003, generator=torch.Generator().manual_seed(0))
    whole = resample(x, orig, new)
    for size in (7, 37, 5003):
        resampler = StreamingResampler(orig, new)
        streamed = torch.cat([resampler.push(c) for c in x.split(size)] + [resampler.finish()])
        torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-6)
