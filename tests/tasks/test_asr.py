"""The asr task: manifests, the recognizer, training on tiny synthetic audio, streaming, the CLI."""

from __future__ import annotations

import itertools
import json
import math
import random
import select
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit import ctc
from rnnkit.audio import StreamingResampler, resample
from rnnkit.cli import main
from rnnkit.data.manifest import read_manifest
from rnnkit.tasks import asr
from rnnkit.train.trainer import TrainConfig

from ..test_ctc import BigramLM

soundfile = pytest.importorskip("soundfile", reason="the asr task needs soundfile (the tasks extra)")
pytest.importorskip("jiwer", reason="the asr task scores with jiwer (the tasks extra)")

RATE = 8000
TONES = {"a": 500.0, "b": 1200.0, "c": 2500.0}  # each letter is a tone: a tiny, learnable "speech"


def speak(text: str, rng: random.Random) -> np.ndarray:
    pieces = []
    for letter in text:
        seconds = rng.uniform(0.08, 0.14)
        t = np.arange(int(RATE * seconds)) / RATE
        pieces += [0.5 * np.sin(2 * math.pi * TONES[letter] * t), np.zeros(int(RATE * 0.04))]
    return np.concatenate([np.zeros(int(RATE * 0.05)), *pieces]).astype(np.float32)


def write_corpus(folder, n: int, seed: int, name: str) -> str:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        text = "".join(rng.choice("abc") for _ in range(rng.randint(1, 3)))
        soundfile.write(folder / f"{name}{i}.wav", speak(text, rng), RATE)
        lines.append(json.dumps({"path": f"{name}{i}.wav", "text": text}))  # relative to the manifest
    manifest = folder / f"{name}.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return str(manifest)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tones")
    return write_corpus(folder, 48, 0, "train"), write_corpus(folder, 12, 1, "test")


def tiny(data, test, **overrides) -> asr.ASRConfig:
    values = dict(data=data, test_data=test, sample_rate=RATE, n_mels=20, hidden_size=32, num_layers=1,
                  dropout=0.0, batch_size=8, dev_fraction=0.125, time_width=3, freq_width=4)
    values.update(overrides)
    return asr.ASRConfig(**values)


def test_manifest_paths_are_relative_to_the_manifest_and_errors_name_the_line(tmp_path, corpus):
    utterances = read_manifest(corpus[0])
    assert utterances[0].path.is_file() and utterances[0].line == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "nowhere.wav", "text": "a"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: no such audio file"):
        read_manifest(bad)
    bad.write_text('{"file": "x.wav", "text": "a"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: needs the columns 'path'"):
        read_manifest(bad)
    tsv = tmp_path / "m.tsv"
    tsv.write_text("path\ttext\n" + "\n".join(f"{u.path}\t{u.text}" for u in utterances[:3]) + "\n")
    assert [u.text for u in read_manifest(tsv)] == [u.text for u in utterances[:3]]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.csv is empty"):
        read_manifest(empty)


def test_a_transcript_outside_the_alphabet_is_an_error_naming_it(corpus):
    utterances = asr.load_manifest(corpus[1], asr.front_end(tiny(*corpus)))
    with pytest.raises(ValueError, match=r"test.jsonl:\d+: the transcript .* outside the alphabet"):
        asr.encode(utterances, ["a", "b"])


def test_frame_stacking_and_lengths():
    model = asr.SpeechRecognizer(3, tiny(None, None, frame_stack=3))
    x = torch.arange(7 * 2 * 20, dtype=torch.float32).reshape(7, 2, 20)
    stacked = model.stacked(x)  # (3, 2, 60)
    assert stacked.shape == (3, 2, 60)
    assert torch.equal(stacked[1, 0], torch.cat([x[3, 0], x[4, 0], x[5, 0]]))
    assert torch.equal(stacked[2, 1, 20:], torch.zeros(40))
    model.eval()
    log_probs, steps = model(torch.randn(7, 2, 20), torch.tensor([7, 4]))
    assert log_probs.shape == (3, 2, 4) and steps.tolist() == [3, 2]
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3, 2))


def test_training_on_tones_lowers_the_loss_and_evaluates(tmp_path, corpus):
    out = tmp_path / "run"
    summary = asr.train(tiny(*corpus), TrainConfig(steps=80, lr=5e-3, eval_every=40, checkpoint_every=40,
                                                   warmup_steps=5, log_every=10), out, progress=False)
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line and '"eval"' not in line]
    assert losses[-1] < 0.6 * losses[0]
    test = summary["test"]
    assert set(test) >= {"cer", "wer", "greedy_wer", "empty_wer", "most_frequent_wer", "n"}
    assert test["empty_wer"] == 1.0 and test["n"] == 12
    assert (out / "plots" / "alignment.png").stat().st_size > 0
    assert (out / "transcripts.txt").read_text().count("\n") == 42

    main(["asr", "evaluate", "--checkpoint", str(out), "--json", "--words", str(out / "transcripts.txt")])
    trained = asr.TrainedASR.load(out)  # band-limited to 2 kHz, the 2.5 kHz "c" is gone: an unfiltered test would pass
    assert trained.evaluate(band_rate=4000)["cer"] > trained.evaluate()["cer"] + 0.1


def test_evaluate_cli_prints_the_keys_of_the_design(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    asr.train(tiny(*corpus), TrainConfig(steps=4, eval_every=4, checkpoint_every=4, log_every=2), out, progress=False)
    capsys.readouterr()
    assert main(["asr", "evaluate", "--checkpoint", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"task", "split", "n", "cer", "wer", "greedy_wer", "empty_wer"} <= set(result)
    assert result["task"] == "asr" and result["decoder"] == "greedy"
    audio = str(read_manifest(corpus[1])[0].path)
    assert main(["asr", "transcribe", "--checkpoint", str(out), audio, "--alignment", str(tmp_path / "a.png")]) == 0
    text = capsys.readouterr().out.split("\t")[1][:-1]
    assert main(["asr", "transcribe", "--checkpoint", str(out), audio, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"path": audio, "text": text}
    assert (tmp_path / "a.png").stat().st_size > 0
    assert main(["asr", "transcribe", "--checkpoint", str(out), "--stream", audio]) == 2  # bidirectional: refused
    assert "streaming needs a unidirectional model" in capsys.readouterr().err

    # --limit N scores the first N utterances: an ignored limit gives n 12, the last N or a shuffle other texts
    first = tmp_path / "first5.jsonl"
    first.write_text("".join(json.dumps({"path": str(u.path), "text": u.text}) + "\n"
                             for u in read_manifest(corpus[1])[:5]))
    trained = asr.TrainedASR.load(out)
    limited = trained.evaluate(limit=5, band_rate=4000)
    assert limited["n"] == 5 and limited == {**trained.evaluate(str(first), band_rate=4000), "split": "test"}
    assert main(["asr", "evaluate", "--checkpoint", str(out), "--limit", "5", "--split", "train", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 5
    assert main(["asr", "evaluate", "--checkpoint", str(out), "--limit", "0"]) == 2
    assert "limit must be a number of utterances >= 1, got 0" in capsys.readouterr().err


def fixed_streaming_model(corpus) -> asr.TrainedASR:
    """A unidirectional 2-layer recognizer with seeded weights (scaled up so the classes differ from frame to
    frame) and global statistics from the training audio: no training, so the test is fast and the same every
    run."""
    config = tiny(*corpus, bidirectional=False, normalize="global", num_layers=2)
    torch.manual_seed(3)  # a seed whose model gives 2-3 classes and a non-empty transcript on each test file
    model = asr.SpeechRecognizer(3, config)
    frames = torch.cat(asr.load_manifest(corpus[0], asr.front_end(config)).features[:16])  # (sum T, M)
    with torch.no_grad():
        model.mean.copy_(frames.mean(0))
        model.std.copy_(frames.std(0))
        for p in model.parameters():
            p.mul_(3.0)
    return asr.TrainedASR(model, config, Path("unused"), alphabet=["a", "b", "c"], most_frequent="")


def test_streaming_equals_decoding_the_whole_file(corpus):
    """Chunk by chunk (sizes that do not divide the 80-sample hop, nor the 200-sample window), the stream's
    per-step log-probabilities equal those of the whole file within 1e-5 (float32; measured 5e-7: the STFT
    of a shorter buffer rounds differently), and so do the greedy transcripts."""
    trained = fixed_streaming_model(corpus)
    k = trained.config.frame_stack
    for utterance in read_manifest(corpus[1])[:4]:
        wave, _ = asr.read_audio(utterance.path, RATE)
        _, whole = trained.log_probs(utterance.path)  # (T', 1 + A)
        assert whole.shape[0] == math.ceil(trained.logmel.frames(len(wave)) / k)
        labels = whole.argmax(-1)
        assert len(labels.unique()) >= 2, "every frame is one class: the comparison would be trivial"
        text = trained.transcribe(utterance.path)
        assert text, "empty transcript: comparing it would prove nothing"
        for size in (37, 333, len(wave) + 1):
            streamed = torch.stack(list(trained.stream_log_probs(wave.split(size))))  # (T', 1 + A)
            torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-5,
                                       msg=lambda m, where=f"{utterance.path} in chunks of {size}": f"{where}: {m}")
            assert "".join(trained.stream(wave.split(size))) == text


def test_evaluate_with_a_tail_of_silence_scores_the_files_with_that_silence_appended(corpus, tmp_path):
    """``tail_ms=250`` scores exactly as the test files with 250 ms of zeros written after them (the model
    spells the silence differently from the trimmed clips: the test compares something). Catches the tail
    not appended, appended in samples of another rate, or to the training audio instead."""
    trained = fixed_streaming_model(corpus)
    lines = []
    for i, utterance in enumerate(read_manifest(corpus[1])):
        wave, _ = asr.read_audio(utterance.path, RATE)
        soundfile.write(tmp_path / f"{i}.wav", torch.cat([wave, torch.zeros(RATE // 4)]).numpy(), RATE,
                        subtype="FLOAT")
        lines.append(json.dumps({"path": f"{i}.wav", "text": utterance.text}))
    (tmp_path / "tailed.jsonl").write_text("\n".join(lines) + "\n")
    tailed = trained.evaluate(tail_ms=250)
    assert {**tailed, "split": None} == {**trained.evaluate(str(tmp_path / "tailed.jsonl")), "split": None}
    assert tailed["greedy_cer"] != trained.evaluate()["greedy_cer"]
    with pytest.raises(ValueError, match="tail_ms must be >= 0, got -1"):
        trained.evaluate(tail_ms=-1)


def test_streaming_a_bidirectional_or_utterance_normalized_model_is_refused(corpus):
    for overrides in ({"bidirectional": True, "normalize": "global"}, {"bidirectional": False}):
        config = tiny(*corpus, **overrides)
        trained = asr.TrainedASR(asr.SpeechRecognizer(3, config), config, Path("unused"), alphabet=["a", "b", "c"],
                                 most_frequent="")
        with pytest.raises(ValueError, match="streaming needs a unidirectional model trained with normalize"):
            next(trained.stream_log_probs([torch.zeros(100)]))


def test_streaming_sets_what_a_stream_needs(corpus):
    config = tiny(*corpus, streaming=True, bidirectional=True)
    assert (config.bidirectional, config.normalize) == (False, "global")


def test_streaming_trains_on_joined_utterances_and_tests_on_each_alone(corpus):
    """``--streaming`` (join 3): every training utterance is spoken in exactly one train or dev example, with
    the texts joined by spaces, and the examples are longer than their utterances (the pauses); the test split
    is the utterances alone, as without joining. ``join=1`` changes nothing. Catches joining that drops or
    repeats utterances, loses the spaces, joins the test split, or leaks across the dev split."""
    config = tiny(*corpus, streaming=True)
    assert config.join == 3 and tiny(*corpus).join == 1
    splits = asr.load_splits(config, seed=0)
    alone = asr.load_splits(tiny(*corpus, streaming=True, join=1), seed=0)
    plain = asr.load_splits(tiny(*corpus), seed=0)  # the bidirectional default: each utterance alone
    for split in ("train", "dev", "test"):
        assert all(torch.equal(a, b) for a, b in zip(alone[split].features, plain[split].features))
    for split in ("train", "dev"):
        words = sorted(w for text in splits[split].texts for w in text.split(" "))
        assert words == sorted(alone[split].texts), f"{split}: the joined examples do not hold its utterances once"
        assert sum(len(f) for f in splits[split].features) > sum(len(f) for f in alone[split].features) + \
            len(splits[split].texts) * 3  # at least 30 ms of silence per example (the lead and tail may be 0)
    assert any(" " in text for text in splits["train"].texts)
    assert splits["test"].texts == alone["test"].texts
    assert all(torch.equal(a, b) for a, b in zip(splits["test"].features, alone["test"].features))
    assert asr.load_splits(config, seed=0)["train"].texts == splits["train"].texts  # seeded


def test_bad_configs_are_refused(corpus):
    with pytest.raises(ValueError, match="join must be a positive int, got 0"):
        tiny(*corpus, join=0).validate()
    with pytest.raises(ValueError, match="normalize must be one of"):
        tiny(*corpus, normalize="none").validate()
    with pytest.raises(ValueError, match="--test-data needs --data"):
        asr.ASRConfig(test_data=corpus[1]).validate()
    with pytest.raises(ValueError, match="language model or word list needs the beam decoder"):
        asr.Decoder(["a"], "greedy", lexicon=asr.ctc.Lexicon(["a"]))


def test_the_bundled_digits_load_with_their_split():
    splits = asr.load_bundled(asr.front_end(asr.ASRConfig(n_mels=20)))
    assert len(splits["train"].texts) == 360 and len(splits["test"].texts) == 120
    assert set(splits["train"].texts) == {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                          "nine"}
    assert all(f.shape[1] == 20 and f.shape[0] > 10 for f in splits["test"].features)


def beam_and_lm(trained: asr.TrainedASR, seed: int = 0) -> asr.Decoder:
    """Beam search (width 8) with a random bigram character LM and a word list of every text of up to 3 letters."""
    lm = ctc.CharLM(BigramLM(torch.randn(4, 4, generator=torch.Generator().manual_seed(seed))), ["\n", "a", "b", "c"])
    words = ["".join(w) for n in (1, 2, 3) for w in itertools.product("abc", repeat=n)]
    return asr.Decoder(trained.alphabet, "beam", 8, lm, 0.5, 0.0, ctc.Lexicon(words))


def test_live_transcription_equals_decoding_the_whole_file(corpus, tmp_path):
    """``live`` (incremental features, steps, greedy or beam + LM decoding; the resampler when the input is at
    16 kHz) gives the whole file's text as its one final update, after partial updates that each change the
    text, in chunks that divide neither the hop (80 samples) nor the window (200). Catches a decoder restarted
    per chunk, a resampler that drops or repeats samples at chunk edges, a stray endpoint, duplicate updates."""
    trained = fixed_streaming_model(corpus)
    for decoder in (asr.Decoder(trained.alphabet), beam_and_lm(trained)):
        for utterance in read_manifest(corpus[1])[:2]:
            wave, _ = asr.read_audio(utterance.path, RATE)
            fast = tmp_path / "16k.wav"
            soundfile.write(fast, resample(wave, RATE, 16000).numpy(), 16000, subtype="FLOAT")
            for path, rate in ((utterance.path, RATE), (fast, 16000)):
                expected = decoder(trained.log_probs(path)[1])
                assert expected, "empty transcript: comparing it would prove nothing"
                audio, _ = asr.read_audio(path)
                for size in (37, 333):
                    updates = list(trained.live(audio.split(size), rate, decoder))
                    assert [u.text for u in updates if u.final] == [expected]
                    assert updates[-1].final and updates[-1].t_audio == pytest.approx(len(audio) / rate)
                    partial = [u.text for u in updates if not u.final]
                    assert partial and all(a != b for a, b in zip(partial, partial[1:]))
                    assert all(a.t_audio <= b.t_audio for a, b in zip(updates, updates[1:]))
            resampler = StreamingResampler(16000, RATE)
            streamed = torch.stack(list(trained.stream_log_probs(
                [*(resampler.push(c) for c in audio.split(333)), resampler.finish()])))
            torch.testing.assert_close(streamed, trained.log_probs(fast)[1], rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def streaming_run(corpus, tmp_path_factory) -> Path:
    """A tiny streaming recognizer trained on the tones (80 steps, a few seconds), on each utterance alone
    (``join=1``): in 80 steps the recipe's joined examples (half as many, each longer) leave the first test
    clips' transcripts empty, and these tests are about endpoints and the CLI, not the recipe's accuracy."""
    out = tmp_path_factory.mktemp("live") / "run"
    asr.train(tiny(*corpus, streaming=True, join=1), TrainConfig(
        steps=80, lr=5e-3, eval_every=80, checkpoint_every=80, warmup_steps=5, log_every=40), out, progress=False)
    return out


def test_a_pause_ends_an_utterance_and_resets_the_state(corpus, streaming_run, tmp_path):
    """Two clips with 1.2 s of silence between them give two final updates, each clip's own text: an endpoint
    that never fired, or did not reset the decoder, would give one final text or the first text twice."""
    trained = asr.TrainedASR.load(streaming_run)
    first, second = (u.path for u in read_manifest(corpus[1])[:2])
    texts = [trained.transcribe(first), trained.transcribe(second)]
    assert all(texts), texts
    audio = torch.cat([asr.read_audio(first)[0], torch.zeros(int(1.2 * RATE)), asr.read_audio(second)[0]])
    assert [u.text for u in trained.live(audio.split(400), RATE, silence_ms=300) if u.final] == texts
    soundfile.write(tmp_path / "both.wav", audio.numpy(), RATE, subtype="FLOAT")
    assert [u.text for u in trained.live(audio.split(400), RATE, silence_ms=0) if u.final] == [
        trained.transcribe(tmp_path / "both.wav")]


def pcm16(path) -> bytes:
    """The samples of a 16-bit file as raw little-endian PCM (exact: they were 16-bit)."""
    return (asr.read_audio(path)[0].numpy() * 32768).astype("<i2").tobytes()


def test_the_cli_transcribes_a_pipe_as_it_arrives(corpus, streaming_run, tmp_path):
    """``transcribe --stream - --json`` through a real pipe: an update comes out while the pipe is still open (a
    reader that waited for the end of the stream would time out), the lines have the issue's keys, and the final
    text equals transcribing the same audio as a file."""
    first, second = (tmp_path / "first.wav", tmp_path / "second.wav")  # the first ends in 0.3 s of silence
    clips = [soundfile.read(u.path, dtype="int16")[0] for u in read_manifest(corpus[1])[:2]]
    soundfile.write(first, np.concatenate([clips[0], np.zeros(int(0.3 * RATE), np.int16)]), RATE, subtype="PCM_16")
    soundfile.write(second, clips[1], RATE, subtype="PCM_16")
    both = tmp_path / "both.wav"
    soundfile.write(both, np.concatenate([soundfile.read(first, dtype="int16")[0], clips[1]]), RATE,
                    subtype="PCM_16")
    expected = asr.TrainedASR.load(streaming_run).transcribe(both)
    process = subprocess.Popen([sys.executable, "-m", "rnnkit", "asr", "transcribe", "--checkpoint",
                                str(streaming_run), "--stream", "-", "--json", "--chunk-ms", "50"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        process.stdin.write(pcm16(first))
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], 120)
        assert ready, "no output while the pipe stayed open"
        update = json.loads(process.stdout.readline())
        assert set(update) == {"t_audio", "t_wall", "text", "final"} and update["final"] is False
        out, err = process.communicate(pcm16(second), timeout=120)
    finally:
        process.kill()
    updates = [update, *map(json.loads, out.decode().splitlines())]
    assert [u["text"] for u in updates if u["final"]] == [expected], err.decode()
    assert updates[-1]["t_audio"] == pytest.approx(len(pcm16(both)) / 2 / RATE, abs=1e-3)  # rounded to ms


def test_streaming_bad_input_is_an_error_without_a_traceback(corpus, streaming_run, tmp_path, capsys):
    """A raw file read as a stream prints the final text only (not a terminal); a stream that ends mid-sample
    and a WAV header of two channels are errors that say so, status 2."""
    clip = read_manifest(corpus[1])[0].path
    raw = tmp_path / "clip.raw"
    raw.write_bytes(pcm16(clip))
    run = ["asr", "transcribe", "--checkpoint", str(streaming_run), "--stream"]
    capsys.readouterr()
    assert main([*run, str(raw)]) == 0
    assert capsys.readouterr().out == asr.TrainedASR.load(streaming_run).transcribe(clip) + "\n"
    raw.write_bytes(pcm16(clip) + b"\x01")
    assert main([*run, str(raw)]) == 2
    assert "ended mid-sample" in capsys.readouterr().err
    stereo = tmp_path / "stereo.wav"
    soundfile.write(stereo, np.zeros((800, 2), dtype=np.int16), RATE, subtype="PCM_16")
    assert main([*run, str(stereo)]) == 2
    assert "2 channel(s) of 16-bit samples" in capsys.readouterr().err
    assert main([*run, str(tmp_path / "nowhere")]) == 2
    assert "no such pipe or file" in capsys.readouterr().err
    assert main([*run[:-1], str(clip), "--input-rate", "8000"]) == 2
    assert "--input-rate is the rate of raw PCM read with --stream" in capsys.readouterr().err
