"""The tag task: the CRF (pytorch-crf) against brute-force enumeration, the CoNLL reader on the bundled
data and on malformed lines, a short training run whose loss falls, evaluate --json and predict."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

pytest.importorskip("torchcrf")
pytest.importorskip("seqeval")

import rnnkit  # noqa: E402
from rnnkit.cli import main  # noqa: E402
from rnnkit.tasks.tag import (  # noqa: E402
    TagConfig,
    TrainedTagger,
    load_sentences,
    parse_conll,
    split_sentences,
    tokenize,
    train,
)
from rnnkit.train.trainer import TrainConfig  # noqa: E402


def brute_force(crf, emissions, mask):
    """log Z, the best path and every path's score, per sequence, by enumerating all tag sequences."""
    T, B, K = emissions.shape
    out = []
    for b in range(B):
        L = int(mask[:, b].sum())
        scores = {}
        for path in itertools.product(range(K), repeat=L):
            s = crf.start_transitions[path[0]] + emissions[0, b, path[0]]
            for t in range(1, L):
                s = s + crf.transitions[path[t - 1], path[t]] + emissions[t, b, path[t]]
            scores[path] = s + crf.end_transitions[path[-1]]
        log_z = torch.logsumexp(torch.stack(list(scores.values())), 0)
        out.append((log_z, max(scores, key=lambda p: scores[p]), scores))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crf_likelihood_and_viterbi_match_brute_force(seed):
    from torchcrf import CRF

    torch.manual_seed(seed)
    K, T = 3, 4
    crf = CRF(K).double()
    for p in crf.parameters():
        torch.nn.init.normal_(p)
    lengths = torch.tensor([4, 3, 1, 2])
    mask = torch.arange(T)[:, None] < lengths[None, :]  # (T, B) bool
    emissions = torch.randn(T, len(lengths), K, dtype=torch.double)
    tags = torch.randint(K, (T, len(lengths)))
    expected = brute_force(crf, emissions, mask)
    with torch.no_grad():
        ll = crf(emissions, tags, mask=mask, reduction="none")
        paths = crf.decode(emissions, mask=mask)
    for b, (log_z, best, scores) in enumerate(expected):
        L = int(lengths[b])
        gold = tuple(tags[:L, b].tolist())
        torch.testing.assert_close(ll[b], scores[gold] - log_z)
        assert tuple(paths[b]) == best and len(paths[b]) == L


def test_the_bundled_data_and_its_split():
    sentences = load_sentences(None)
    assert len(sentences.tokens) == 2394 and sum(map(len, sentences.tokens)) == 46469
    tags = {t for s in sentences.tags for t in s}
    assert len(tags) == 21 and "O" in tags and "B-person" in tags
    splits = split_sentences(sentences)
    assert [len(splits[s].tokens) for s in ("train", "dev", "test")] == [1916, 239, 239]
    assert split_sentences(load_sentences(None))["test"].tokens == splits["test"].tokens


def test_reader_takes_any_whitespace_and_blank_lines():
    text = "\n\nJohn B-PER\nlives\tO\n\n\n\nin  O\nParis B-LOC\n"
    sentences = parse_conll(text, "tiny")
    assert sentences.tokens == [["John", "lives"], ["in", "Paris"]]
    assert sentences.tags == [["B-PER", "O"], ["O", "B-LOC"]]


def test_a_white_space_line_ends_a_sentence():
    # catches a reader that ends a sentence only at an empty line ("" rather than white space alone)
    assert parse_conll("John B-PER\n \t\nin O\n", "tiny").tokens == [["John"], ["in"]]


def test_a_file_without_sentences_is_an_error():
    # catches a reader that returns no sentences, which training would meet later as an empty split
    with pytest.raises(ValueError, match=r"^empty\.conll has no sentences$"):
        parse_conll("\n  \n\n", "empty.conll")


@pytest.mark.parametrize("body,message", [
    ("John B-PER\nlives\nin O\n", "line 2: expected a token and its tag"),
    ("John B-PER\n\nin O extra\n", "line 3: expected a token and its tag"),
])
def test_a_malformed_line_is_named_by_its_number(body, message):
    with pytest.raises(ValueError, match=message):
        parse_conll(body, "tiny.conll")


def test_a_malformed_line_through_the_cli(tmp_path, capsys):
    path = tmp_path / "bad.conll"
    path.write_text("a O\nb O\n\nc O\nd B-X Y\n")
    assert main(["tag", "train", "--data", str(path), "--steps", "1", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    assert "line 5: expected a token and its tag" in capsys.readouterr().err


def test_tokenize_keeps_mentions_hashtags_and_urls():
    assert tokenize("@bob saw #Paris at http://x.co/a, wow!") == \
        ["@bob", "saw", "#Paris", "at", "http://x.co/a,", "wow", "!"]


TINY_NAMES = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank"]
TINY_PLACES = ["Paris", "Rome", "Oslo", "Lima"]


def tiny_conll(n: int = 60) -> str:
    lines = []
    for i in range(n):
        name, place = TINY_NAMES[i % len(TINY_NAMES)], TINY_PLACES[i % len(TINY_PLACES)]
        words = [(name, "B-PER"), ("flew", "O"), ("to", "O"), (place, "B-LOC"), ("today", "O")]
        if i % 3 == 0:
            words = [("yesterday", "O"), *words[:3], ("New", "B-LOC"), ("York", "I-LOC")]
        lines.extend(f"{w} {t}" for w, t in words)
        lines.append("")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tag")
    data = root / "tiny.conll"
    data.write_text(tiny_conll())
    out = root / "run"
    config = TagConfig(data=str(data), hidden_size=16, embedding_size=16, char_hidden_size=8,
                       char_embedding_size=8, dropout=0.1, batch_size=8)
    summary = train(config, TrainConfig(steps=40, eval_every=20, log_every=5, lr=2e-2, warmup_steps=2), out,
                    progress=False)
    return out, data, summary


def test_training_loss_falls(run_dir):
    out, _, summary = run_dir
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < 0.5 * losses[0]
    assert summary["test"]["entity_f1"] > 0.5


def test_evaluate_json_keys_and_rnnkit_load(run_dir, capsys):
    out, data, summary = run_dir
    assert main(["tag", "evaluate", "--checkpoint", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"task", "split", "n", "entity_f1", "precision", "recall", "baseline_entity_f1"}
    assert result["task"] == "tag" and result["split"] == "test" and result["n"] == 6
    assert result["entity_f1"] == pytest.approx(summary["test"]["entity_f1"])
    model = rnnkit.load(out)
    assert isinstance(model, TrainedTagger)
    assert model.evaluate(str(data))["n"] == 6  # the training file named explicitly: its test split
    other = data.parent / "other.conll"
    other.write_text("Bob O\n\nZed O\n")
    assert model.evaluate(str(other))["n"] == 2  # another file: scored whole


def test_predict_prints_entities(run_dir, capsys):
    out, _, _ = run_dir
    assert main(["tag", "predict", "--checkpoint", str(out), "Alice flew to Paris today"]) == 0
    printed = capsys.readouterr().out
    assert "PER\tAlice" in printed and "LOC\tParis" in printed


def test_an_unseen_tag_is_an_error(run_dir):
    out, _, _ = run_dir
    other = out.parent / "unseen.conll"
    other.write_text("Bob B-ORG\n")
    with pytest.raises(ValueError, match="'B-ORG'.*never seen in training"):
        rnnkit.load(out).evaluate(str(other))


def test_bioes_tags_train_and_score(tmp_path):
    """BIOES input (S- for one-word entities, E- for the last word) is read and scored as given."""
    bioes = (tiny_conll().replace("B-PER", "S-PER").replace(" B-LOC\ntoday", " S-LOC\ntoday")
             .replace("York I-LOC", "York E-LOC"))
    data = tmp_path / "bioes.conll"
    data.write_text(bioes)
    config = TagConfig(data=str(data), hidden_size=16, embedding_size=16, char_hidden_size=8,
                       char_embedding_size=8, dropout=0.1, batch_size=8)
    summary = train(config, TrainConfig(steps=40, eval_every=40, lr=2e-2, warmup_steps=2), tmp_path / "run",
                    progress=False)
    assert summary["test"]["entity_f1"] > 0.5
