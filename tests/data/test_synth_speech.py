"""The synthesized-speech corpus: recipe, splits, determinism, noise; espeak-ng stays optional.

The tests that synthesize need the optional extra (``pip install "rnnkit[synth]"``) and are
skipped without it; the recipe, the noise and the import checks run everywhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnkit.data import synth_speech as ss

TINY = ss.SynthRecipe(seed=3, n_train=4, n_test=2, n_test_seen=2)


@pytest.fixture
def espeak():
    return pytest.importorskip(
        "espeakng_loader",
        reason='espeak-ng is an optional, GPL-3.0 extra: pip install "rnnkit[synth]" to run the synthesis tests',
    )


def test_import_rnnkit_does_not_load_espeak():
    code = (
        "import sys, rnnkit, rnnkit.data, rnnkit.data.synth_speech\n"
        "loaded = [m for m in ('espeakng_loader', 'soundfile') if m in sys.modules]\n"
        "assert not loaded, f'import rnnkit loaded {loaded}'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_missing_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # makes `import espeakng_loader` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "rnnkit\[synth\]"'):
        ss._Espeak()
    with pytest.raises(ImportError, match=r"needs espeakng_loader: pip install \"rnnkit\[synth\]\""):
        ss.generate(TINY, "/nonexistent/never/created")


def test_plan_is_seeded_and_keeps_held_out_voices_out_of_training():
    recipe = ss.SynthRecipe(seed=1, n_train=400, n_test=100, n_test_seen=100)
    utterances = ss.plan(recipe)
    assert utterances == ss.plan(recipe), "the same seed must give the same plan"
    assert utterances != ss.plan(ss.SynthRecipe(seed=2, n_train=400, n_test=100, n_test_seen=100))
    assert {split: len(rows) for split, rows in utterances.items()} == {"train": 400, "test": 100, "test_seen": 100}
    held_out = set(recipe.held_out_voices())
    assert len(held_out) == 69 and len(recipe.train_voices()) == 147
    for split in ("train", "test_seen"):
        leaked = {u["voice"] for u in utterances[split]} & held_out
        assert not leaked, f"held-out voices {sorted(leaked)} in {split}"
    assert {u["voice"] for u in utterances["test"]} <= held_out
    for rows in utterances.values():
        for u in rows:
            assert set(u["text"]) <= set(ss.ALPHABET), f"{u['text']!r} leaves the alphabet"
            assert u["text"] == u["text"].strip() and "  " not in u["text"]
            assert 130 <= u["speed"] <= 210 and 30 <= u["pitch"] <= 70
    texts = [u["text"] for u in utterances["train"]]
    digit_strings = [t for t in texts if set(t.split()) <= set(ss.DIGITS)]
    assert 0.35 < len(digit_strings) / len(texts) < 0.65, "about half digit strings (digit_fraction=0.5)"
    assert max(len(t.split()) for t in digit_strings) <= 7


def test_recipe_key_changes_with_the_recipe_and_errors_name_the_field():
    assert ss.SynthRecipe().key() == ss.SynthRecipe().key()
    assert ss.SynthRecipe(seed=1).key() != ss.SynthRecipe(seed=2).key()
    with pytest.raises(ValueError, match=r"held_out_variants \['m99'\] are not in variants"):
        ss.SynthRecipe(held_out_variants=("m99",))
    with pytest.raises(ValueError, match=r"speed_wpm must lie in espeak-ng's 80-450 words per minute, got \(50, 100\)"):
        ss.SynthRecipe(speed_wpm=(50, 100))
    with pytest.raises(ValueError, match=r"n_test must be >= 0, got -1"):
        ss.SynthRecipe(n_test=-1)


@pytest.mark.parametrize("color", ss.NOISE_COLORS)
@pytest.mark.parametrize("snr_db", [0.0, 12.5, 30.0])
def test_noise_has_the_requested_snr_and_is_seeded(color, snr_db):
    t = torch.arange(2 * 8000, dtype=torch.float32).reshape(2, 8000) / 8000  # (B=2, T) seconds at 8 kHz
    wave = 0.3 * torch.sin(2 * torch.pi * 440 * t) * torch.tensor([[1.0], [0.1]])  # rows 10x apart in amplitude
    noisy = ss.add_noise(wave, snr_db, torch.Generator().manual_seed(0), color)
    assert noisy.shape == wave.shape and noisy.dtype == wave.dtype
    noise = (noisy - wave).double()
    ratio_db = 10 * torch.log10(wave.double().pow(2).mean(-1) / noise.pow(2).mean(-1))  # (B,)
    torch.testing.assert_close(ratio_db, torch.full((2,), snr_db, dtype=torch.float64), atol=1e-3, rtol=0)
    again = ss.add_noise(wave, snr_db, torch.Generator().manual_seed(0), color)
    assert torch.equal(noisy, again), "same generator state, same noise"
    assert not torch.equal(noisy, ss.add_noise(wave, snr_db, torch.Generator().manual_seed(1), color))


def test_pink_noise_has_more_power_at_low_frequencies():
    silence_but_one = torch.zeros(1 << 14)
    silence_but_one[0] = 1.0  # power 1/T, so the noise power is known
    noise = ss.add_noise(silence_but_one, 0.0, torch.Generator().manual_seed(0), "pink") - silence_but_one
    power = torch.fft.rfft(noise).abs().pow(2)  # (T // 2 + 1,)
    n = power.shape[0]
    low, high = power[1 : n // 16].mean(), power[n // 2 :].mean()
    assert low > 10 * high, f"pink noise: low-band power {low:.3g} vs high-band {high:.3g}"


def test_add_random_noise_draws_snr_in_range():
    wave = torch.randn(4000, generator=torch.Generator().manual_seed(5))
    for seed in range(5):
        noisy = ss.add_random_noise(wave, torch.Generator().manual_seed(seed), snr_db=(10.0, 20.0))
        snr = 10 * torch.log10(wave.pow(2).mean() / (noisy - wave).pow(2).mean())
        assert 10.0 - 1e-3 <= snr.item() <= 20.0 + 1e-3


def test_every_recipe_voice_exists(espeak):
    data = Path(espeak.get_data_path())
    variants = {p.name for p in (data / "voices" / "!v").iterdir()}
    assert set(ss.VARIANTS) <= variants, f"missing variants {sorted(set(ss.VARIANTS) - variants)}"
    assert ss.espeak_version() == ss.ESPEAKNG_VERSION
    for voice in ss.SynthRecipe().voices():
        ss._espeak().set_voice(voice)  # raises ValueError naming the voice


def test_synthesize_returns_float_audio_and_rejects_unknown_voices(espeak):
    wave = ss.synthesize("three seven", "en-us+f3", speed=160, pitch=40)
    assert wave.dtype.name == "float32" and wave.ndim == 1
    assert 0.3 * ss.SAMPLE_RATE < wave.size < 3 * ss.SAMPLE_RATE, f"{wave.size / ss.SAMPLE_RATE:.2f} s for two words"
    assert 0.05 < abs(wave).max() <= 1.0
    with pytest.raises(ValueError, match=r"espeak-ng has no voice 'en-us\+annie' \(no variant file voices/!v/annie\)"):
        ss.synthesize("one", "en-us+annie")  # the file is "Annie"; espeak-ng itself would fall back to plain en-us
    with pytest.raises(ValueError, match=r"espeak-ng has no voice 'xx-nowhere' \(EE_NOT_FOUND\)"):
        ss.synthesize("one", "xx-nowhere")


def test_generate_writes_manifests_and_is_byte_identical(espeak, tmp_path, monkeypatch):
    import soundfile

    monkeypatch.setattr(ss, "SHARD_SIZE", 3)  # 8 utterances in 3 worker processes
    root = ss.generate(TINY, tmp_path / "a", workers=1, progress=False)
    assert root == tmp_path / "a" / TINY.key()
    info = json.loads((root / "recipe.json").read_text())
    assert info["counts"] == {"train": 4, "test": 2, "test_seen": 2} and info["espeak_ng"] == "1.52.0"
    held_out = set(TINY.held_out_voices())
    for split, n in info["counts"].items():
        rows = [json.loads(line) for line in (root / f"{split}.jsonl").read_text().splitlines()]
        assert len(rows) == n
        for row in rows:
            assert set(row) == {"path", "text", "voice", "speed", "pitch", "duration"}
            audio, rate = soundfile.read(root / row["path"], dtype="float32")  # path is relative to the manifest
            assert rate == ss.SAMPLE_RATE and audio.ndim == 1
            assert abs(len(audio) / rate - row["duration"]) < 1e-3
            assert set(row["text"]) <= set(ss.ALPHABET)
            assert (row["voice"] in held_out) == (split == "test"), f"{row['voice']} in {split}"
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".tmp")], "temporary folder left behind"

    again = ss.generate(TINY, tmp_path / "b", workers=2, progress=False)  # shards in another order
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    differ = [str(f) for f in files if (root / f).read_bytes() != (again / f).read_bytes()]
    assert not differ, f"the same recipe gave different bytes in {differ}"

    stamp = (root / "train.jsonl").stat().st_mtime_ns
    assert ss.generate(TINY, tmp_path / "a") == root and (root / "train.jsonl").stat().st_mtime_ns == stamp
