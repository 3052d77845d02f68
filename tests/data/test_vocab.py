"""Vocab: exact round trips at char level, <unk> and stable re-encoding at word level, JSON."""

from __future__ import annotations

import json

import pytest
import torch

from rnnkit.data import Vocab

TEXT = "ROMEO.\nBut, soft! what light through yonder window breaks?\n'Tis the east, and Juliet is the sun.\n"


def test_char_vocab_is_sorted_characters_and_round_trips():
    v = Vocab.build(TEXT)
    assert v.level == "char"
    assert v.tokens == sorted(set(TEXT))
    assert len(v) == len(set(TEXT))
    ids = v.encode(TEXT)
    assert len(ids) == len(TEXT)
    assert v.decode(ids) == TEXT
    t = v.encode_tensor(TEXT)
    assert t.dtype == torch.long and t.shape == (len(TEXT),)
    assert v.decode(t) == TEXT


def test_char_unknown_character_names_it_and_its_position():
    v = Vocab.build("abc")
    with pytest.raises(ValueError, match=r"character 'z' at position 4 of the text is not in the vocabulary"):
        v.encode("abcaz")
    with pytest.raises(ValueError, match=r"character '\\t' at position 0"):
        v.encode("\tabc")


def test_char_level_has_no_max_size():
    with pytest.raises(ValueError, match="max_size is for level='word' only"):
        Vocab.build("abc", max_size=2)


def test_decode_rejects_out_of_range_ids():
    v = Vocab.build("abc")
    with pytest.raises(ValueError, match=r"ids\[1\] is 3, but ids must be in \[0, 3\)"):
        v.decode([0, 3])
    with pytest.raises(ValueError, match=r"1-D tensor"):
        v.decode(torch.zeros(2, 2, dtype=torch.long))


def test_word_vocab_tokens_and_spacing():
    v = Vocab.build(TEXT, level="word")
    assert v.tokens[0] == "<unk>" and v.unk_id == 0
    words = v.tokenize(TEXT)
    assert words[:6] == ["ROMEO", ".", "\n", "But", ",", "soft"]
    assert "'" in words and "Tis" in words  # case kept, apostrophe its own token
    ids = v.encode(TEXT)
    assert 0 not in ids
    decoded = v.decode(ids)
    assert decoded == TEXT, "this text's spacing is the one decode writes"
    assert v.encode(decoded) == ids


def test_word_decode_is_lossy_about_spacing_but_stable():
    v = Vocab.build("a  b\t( c ) -- d's", level="word")
    ids = v.encode("a  b\t( c ) -- d's")
    assert v.decode(ids) == "a b (c)--d's"
    assert v.encode(v.decode(ids)) == ids


def test_word_unknowns_and_max_size():
    text = "the cat the dog the cat a"
    v = Vocab.build(text, level="word", max_size=3)
    assert v.tokens == ["<unk>", "cat", "the"]  # the 2 most frequent, then sorted
    assert v.encode("the dog sat") == [2, 0, 0]
    assert v.decode([2, 0, 1]) == "the <unk> cat"
    with pytest.raises(ValueError, match="max_size must be at least 2"):
        Vocab.build(text, level="word", max_size=1)


@pytest.mark.parametrize("level", ["char", "word"])
def test_json_round_trip(level):
    v = Vocab.build(TEXT, level=level)
    data = json.loads(json.dumps(v.to_json()))
    assert data["format"] == 1 and data["level"] == level
    w = Vocab.from_json(data)
    assert w == v and w.encode(TEXT) == v.encode(TEXT)


@pytest.mark.parametrize(
    "data,message",
    [
        ([], "must be a dict, got list"),
        ({"format": 1, "level": "char"}, "missing 'tokens'"),
        ({"format": 2, "level": "char", "tokens": ["a"]}, "format 2; this rnnkit reads format 1"),
        ({"format": 1, "level": "byte", "tokens": ["a"]}, "level must be one of"),
        ({"format": 1, "level": "char", "tokens": "ab"}, "'tokens' must be a list"),
        ({"format": 1, "level": "char", "tokens": ["a", "bc"]}, r"tokens\[1\] is 'bc'"),
        ({"format": 1, "level": "char", "tokens": ["a", "a"]}, "'a' appears more than once"),
        ({"format": 1, "level": "char", "tokens": ["a", 3]}, r"tokens\[1\] must be a str"),
        ({"format": 1, "level": "word", "tokens": ["the"]}, r"tokens\[0\] must be '<unk>'"),
        ({"format": 1, "level": "char", "tokens": []}, "tokens is empty"),
    ],
    ids=["not_dict", "missing", "format", "level", "tokens_str", "multichar", "dup", "not_str", "no_unk", "empty"],
)
def test_from_json_bad_dict(data, message):
    with pytest.raises(ValueError, match=message):
        Vocab.from_json(data)


def test_build_bad_arguments():
    with pytest.raises(ValueError, match="level must be one of"):
        Vocab.build("abc", level="bpe")
    with pytest.raises(ValueError, match="text is empty"):
        Vocab.build("")
