"""The translate task and its seq2seq decoder: attention that sums to 1 over the valid source steps,
beam search against greedy search, the pair reader and its errors, the bundled verses, a short
training run whose loss falls, evaluate --json, predict and the attention heat map."""

from __future__ import annotations

import json
import random
import re

import pytest
import torch

pytest.importorskip("sacrebleu")

import rnnkit  # noqa: E402
from rnnkit.cli import main  # noqa: E402
from rnnkit.tasks.seq2seq import (  # noqa: E402
    Attention,
    Decoder,
    beam_search,
    greedy,
    sequence_log_probs,
)
from rnnkit.tasks.translate import (  # noqa: E402
    SPECIALS,
    TrainedTranslator,
    TranslateConfig,
    Translation,
    Vocabulary,
    detokenize,
    load_pairs,
    parse_pairs,
    render,
    split_pairs,
    tokenize,
    train,
)
from rnnkit.train.trainer import TrainConfig  # noqa: E402

KINDS = ("additive", "multiplicative")


@pytest.mark.parametrize("kind", KINDS)
def test_attention_sums_to_one_over_the_valid_steps(kind):
    torch.manual_seed(0)
    attention = Attention(kind, query_size=5, memory_size=6, attention_size=4)
    T, B = 7, 3
    memory = torch.randn(T, B, 6)
    lengths = torch.tensor([7, 2, 4])
    mask = torch.arange(T)[:, None] < lengths[None, :]  # (T, B)
    query = torch.randn(B, 5)
    context, weights = attention(query, attention.keys(memory), memory, mask)
    assert weights.shape == (T, B) and context.shape == (B, 6)
    torch.testing.assert_close(weights.sum(0), torch.ones(B))
    assert (weights[~mask] == 0).all() and (weights[mask] > 0).all()
    # what lies past a sequence's end never changes its context
    noisy = memory.clone()
    noisy[~mask] = 1e3
    context_noisy, _ = attention(query, attention.keys(noisy), noisy, mask)
    torch.testing.assert_close(context_noisy, context)


def test_attention_and_decoder_errors():
    with pytest.raises(ValueError, match="attention must be one of additive, multiplicative, got 'dot'"):
        Attention("dot", 4, 4, 4)
    decoder = Decoder(9, memory_size=6, hidden_size=5, embedding_size=4, bos_id=2, eos_id=3)
    with pytest.raises(ValueError, match=r"memory must be \(T, B, D\)"):
        decoder.start(torch.randn(4, 6), torch.tensor([4]))
    with pytest.raises(ValueError, match=r"lengths must be \(B,\) = \(2,\)"):
        decoder.start(torch.randn(4, 2, 6), torch.tensor([4]))
    with pytest.raises(ValueError, match=r"lengths must be in \[1, T=4\]"):
        decoder.start(torch.randn(4, 2, 6), torch.tensor([4, 5]))
    with pytest.raises(ValueError, match="beam_size 10 exceeds the output vocabulary"):
        beam_search(decoder, torch.randn(4, 1, 6), torch.tensor([4]), 10, 5)


def tiny_decoder(seed: int, kind: str, cell: str = "lstm", vocab: int = 7) -> tuple[Decoder, torch.Tensor,
                                                                                  torch.Tensor]:
    """A random decoder (sharpened logits, so searches differ) with a random memory of 4 sequences."""
    torch.manual_seed(seed)
    decoder = Decoder(vocab, memory_size=6, hidden_size=8, embedding_size=5, bos_id=2, eos_id=3, cell=cell,
                      attention=kind).eval()
    with torch.no_grad():
        decoder.out.weight.mul_(4.0)
    memory = torch.randn(5, 4, 6)
    lengths = torch.tensor([5, 3, 1, 4])
    return decoder, memory, lengths


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_of_one_is_greedy(kind, cell, seed):
    decoder, memory, lengths = tiny_decoder(seed, kind, cell)
    found = greedy(decoder, memory, lengths, max_length=12)
    beam = beam_search(decoder, memory, lengths, beam_size=1, max_length=12, alpha=0.0)
    assert beam.tokens == found.tokens
    torch.testing.assert_close(torch.tensor(beam.log_probs), torch.tensor(found.log_probs))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(6))
def test_beam_never_scores_below_greedy(kind, seed):
    """Without length normalization, beam search's output is at least as likely as greedy search's, and the
    log-probabilities both report are those of teacher forcing along their outputs."""
    decoder, memory, lengths = tiny_decoder(seed, kind)
    found = greedy(decoder, memory, lengths, max_length=8)
    beam = beam_search(decoder, memory, lengths, beam_size=4, max_length=8, alpha=0.0)
    for result in (found, beam):
        finished = [len(t) < 8 for t in result.tokens]  # ended with </s> before the limit
        rescored, _ = sequence_log_probs(decoder, memory, lengths, result.tokens, pad_id=1)
        unfinished, _ = sequence_log_probs(decoder, memory, lengths, result.tokens, pad_id=1, add_eos=False)
        expected = [a if f else b for a, b, f in zip(rescored, unfinished, finished)]
        torch.testing.assert_close(torch.tensor(result.log_probs), torch.tensor(expected), rtol=1e-4, atol=1e-4)
    for g, b in zip(found.log_probs, beam.log_probs):
        assert b >= g - 1e-5


def test_length_normalization_can_prefer_a_longer_output():
    """alpha > 0 divides by lp(|Y|), which grows with length: the chosen output is never shorter on average."""
    decoder, memory, lengths = tiny_decoder(3, "additive")
    plain = beam_search(decoder, memory, lengths, beam_size=4, max_length=10, alpha=0.0)
    normalized = beam_search(decoder, memory, lengths, beam_size=4, max_length=10, alpha=2.0)
    assert sum(map(len, normalized.tokens)) >= sum(map(len, plain.tokens))
    assert all(n <= p + 1e-5 for n, p in zip(normalized.log_probs, plain.log_probs))


def test_scheduled_sampling_changes_the_inputs_only_when_asked():
    decoder, memory, lengths = tiny_decoder(0, "multiplicative")
    targets = torch.randint(4, 7, (6, 4))
    forced, _ = decoder(memory, lengths, targets)
    torch.testing.assert_close(decoder(memory, lengths, targets, sampling_prob=0.0)[0], forced)
    torch.manual_seed(1)
    sampled, weights = decoder(memory, lengths, targets, sampling_prob=1.0)
    assert sampled.shape == forced.shape and weights.shape == (6, 5, 4)
    torch.testing.assert_close(sampled[0], forced[0])  # the first step reads <s> either way
    assert not torch.allclose(sampled, forced)
    with pytest.raises(ValueError, match=r"sampling_prob must be in \[0, 1\]"):
        decoder(memory, lengths, targets, sampling_prob=1.5)


# ---------------------------------------------------------------------- data


def test_the_bundled_verses_and_their_split():
    pairs = load_pairs(None)
    assert len(pairs.sources) == 7545
    assert pairs.sources[0] == "In the beginning God created the heaven and the earth."
    assert pairs.targets[0] == "EN el principio crió Dios los cielos y la tierra."
    assert max(len(tokenize(s)) for s in pairs.sources + pairs.targets) <= 20
    splits = split_pairs(pairs)
    assert [len(splits[s].sources) for s in ("train", "dev", "test")] == [6037, 754, 754]
    reverse = load_pairs(None, reverse=True)
    assert reverse.sources[0] == pairs.targets[0] and reverse.targets[0] == pairs.sources[0]


def test_tokenize_and_detokenize():
    assert tokenize("¿Quién es, Señor? (Dios) LORD's") == ["¿", "Quién", "es", ",", "Señor", "?", "(", "Dios", ")",
                                                           "LORD", "'", "s"]
    assert detokenize(tokenize("¿Quién es, Señor? (Dios) LORD's day-star.")) == \
        "¿Quién es, Señor? (Dios) LORD's day-star."


def test_unknown_words_are_replaced_by_the_attended_source_word():
    target = Vocabulary([*SPECIALS, "y", "engendró", "á"])
    found = Translation([0, 5, 6, 0], [1, 4, 4, 5])  # <unk> engendró á <unk>, the <unk>s attending to 1 and 5
    text = "And Peleg lived, begat Reu"  # source positions: And 0, Peleg 1, lived 2, "," 3, begat 4, Reu 5
    assert render(found, text, target, TranslateConfig()) == "Peleg engendró á Reu"
    assert render(found, text, target, TranslateConfig(replace_unk=False)) == "<unk> engendró á <unk>"


def test_pair_reader_skips_blank_lines():
    pairs = parse_pairs("\na b\tx y\n\n c\t z \n", "tiny")
    assert pairs.sources == ["a b", "c"] and pairs.targets == ["x y", "z"]


@pytest.mark.parametrize("body,message", [
    ("one\ttwo\nonly one column\n", r"bad\.tsv line 2: expected source<TAB>target \(2 tab-separated columns\), got 1"),
    ("a\tb\tc\n", r"bad\.tsv line 1: expected source<TAB>target .* got 3 column"),
    ("a\t \n", r"bad\.tsv line 1: the target side is empty"),
    ("\n\n", r"bad\.tsv has no sentence pairs"),
])
def test_malformed_pair_files_are_named(tmp_path, body, message):
    path = tmp_path / "bad.tsv"
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        load_pairs(str(path))


@pytest.mark.parametrize("raw,message", [
    (b"", r"empty\.tsv is empty"),
    (b"caf\xe9\tcafe\n", r"empty\.tsv is not UTF-8 text: byte 0xe9 at offset 3 \(line 1\)"),
])
def test_empty_and_non_utf8_files_through_the_cli(tmp_path, capsys, raw, message):
    path = tmp_path / "empty.tsv"
    path.write_bytes(raw)
    assert main(["translate", "train", "--data", str(path), "--steps", "1", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_one_column_through_the_cli(tmp_path, capsys):
    path = tmp_path / "one.tsv"
    path.write_text("hello\tbonjour\ngoodbye\n")
    assert main(["translate", "train", "--data", str(path), "--steps", "1", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "one.tsv line 2: expected source<TAB>target" in err and "got 1 column" in err


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="attention must be one of additive, multiplicative, got 'dot'"):
        TranslateConfig(attention="dot").validate()
    with pytest.raises(ValueError, match="beam_size must be a positive int, got 0"):
        TranslateConfig(beam_size=0).validate()
    with pytest.raises(ValueError, match=r"sampling_prob must be in \[0, 1\], got 2"):
        TranslateConfig(sampling_prob=2).validate()


# ---------------------------------------------------------------------- training and the trained model

LEXICON = {"red": "rouge", "blue": "bleu", "cat": "chat", "dog": "chien", "big": "grand", "small": "petit",
           "sees": "voit", "likes": "aime"}


def tiny_pairs(n: int = 120) -> str:
    """A word-for-word toy language pair, the adjective after the noun: 'the red cat sees the dog .' ->
    'le chat rouge voit le chien .'."""
    rng = random.Random(0)
    lines = []
    for _ in range(n):
        noun, other = rng.sample(["cat", "dog"], 2)
        adjective = rng.choice(["red", "blue", "big", "small"])
        verb = rng.choice(["sees", "likes"])
        source = f"the {adjective} {noun} {verb} the {other} ."
        target = f"le {LEXICON[noun]} {LEXICON[adjective]} {LEXICON[verb]} le {LEXICON[other]} ."
        lines.append(f"{source}\t{target}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("translate")
    data = root / "tiny.tsv"
    data.write_text(tiny_pairs())
    out = root / "run"
    config = TranslateConfig(data=str(data), min_count=1, hidden_size=24, embedding_size=16, attention_size=16,
                             dropout=0.0, batch_size=16, beam_size=3, sampling_prob=0.2, sampling_ramp_steps=20)
    summary = train(config, TrainConfig(steps=80, eval_every=40, log_every=10, lr=1e-2, warmup_steps=5), out,
                    progress=False)
    return out, data, summary


def test_training_loss_falls_and_beats_the_copy_baseline(run_dir):
    out, _, summary = run_dir
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < 0.3 * losses[0]
    for decoder in ("greedy", "beam"):
        result = summary["test"][decoder]
        assert result["bleu"] > result["copy_bleu"] + 20 and result["chrf"] > result["copy_chrf"]
    assert (out / "plots" / "attention.png").stat().st_size > 1000


def test_evaluate_json_keys_and_rnnkit_load(run_dir, capsys):
    out, data, summary = run_dir
    assert main(["translate", "evaluate", "--checkpoint", str(out), "--json", "--decoder", "greedy"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"task", "split", "n", "bleu", "chrf", "copy_bleu", "copy_chrf", "decoder"}
    assert result["task"] == "translate" and result["split"] == "test" and result["n"] == 12
    assert result["decoder"] == "greedy"
    assert result["bleu"] == pytest.approx(summary["test"]["greedy"]["bleu"])
    model = rnnkit.load(out)
    assert isinstance(model, TrainedTranslator)
    assert model.evaluate(decoder="beam")["bleu"] == pytest.approx(summary["test"]["beam"]["bleu"])
    other = data.parent / "other.tsv"
    other.write_text("the red cat sees the dog .\tle chat rouge voit le chien .\n")
    assert model.evaluate(str(other))["n"] == 1  # another file: scored whole
    with pytest.raises(ValueError, match="decoder must be greedy or beam, got 'sample'"):
        model.evaluate(decoder="sample")


def test_predict_and_the_attention_heat_map(run_dir, capsys, tmp_path):
    out, _, _ = run_dir
    png = tmp_path / "attention.png"
    assert main(["translate", "predict", "--checkpoint", str(out), "the red cat sees the dog .",
                 "--attention-plot", str(png)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("le ") and png.stat().st_size > 1000
    alignment = rnnkit.load(out).align("the red cat sees the dog .")
    weights = torch.tensor(alignment.weights)  # (U, T)
    assert weights.shape == (len(alignment.output_tokens), len(alignment.source_tokens))
    torch.testing.assert_close(weights.sum(1), torch.ones(len(alignment.output_tokens)))
