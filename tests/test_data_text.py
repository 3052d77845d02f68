"""Line readers shared by the tasks (rnnkit.data.text): JSON Lines (classify's data files, ASR manifests) and
delimited lines of fixed columns (translate's pair files, tag's CoNLL files)."""

from __future__ import annotations

import pytest

from rnnkit.data.manifest import read_manifest
from rnnkit.data.text import delimited_lines, json_lines
from rnnkit.tasks.classify import read_rows
from rnnkit.tasks.tag import parse_conll
from rnnkit.tasks.translate import parse_pairs


def test_json_lines_skips_blank_lines_and_keeps_their_numbers():
    # catches numbering that counts only the non-blank lines (errors downstream would name the wrong line)
    assert json_lines('{"a": 1}\n\n  \n{"a": 2}\n', "f.jsonl") == [(1, {"a": 1}), (4, {"a": 2})]


@pytest.mark.parametrize("line,message", [("{oops", r"^f\.jsonl line 2 is not JSON: .* \(column 2\)$"),
                                          ("[1, 2]", r"^f\.jsonl line 2: expected a JSON object, got list$")])
def test_json_lines_names_the_bad_line(line, message):
    with pytest.raises(ValueError, match=message):
        json_lines('{"a": 1}\n' + line, "f.jsonl")


def test_classify_and_manifests_read_json_lines_the_same_way(tmp_path):
    # both callers report a bad line with the same words (they shared the loop, copied, before)
    with pytest.raises(ValueError, match=r"^data\.jsonl line 1: expected a JSON object, got int$"):
        read_rows("3\n", "jsonl", "data.jsonl")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"path": "a.wav", "text": "hi"}\n"text"\n')
    with pytest.raises(ValueError, match=r"m\.jsonl line 2: expected a JSON object, got str$"):
        read_manifest(manifest, check_files=False)


def test_delimited_lines_skip_white_space_lines_and_keep_their_numbers():
    # catches a reader that numbers only the lines it keeps, or that reads " \t " as a row of two empty columns
    rows = delimited_lines("a\tb\n \t \n\nc\t d \n", "f.tsv", separator="\t", columns=2, expected="two columns",
                           what="pairs")
    assert rows == [(1, ["a", "b"]), (4, ["c", " d "])]
    assert delimited_lines("x  1\n\ny\t2\n", "f", separator=None, columns=2, expected="", what="") == [
        (1, ["x", "1"]), (3, ["y", "2"])]


@pytest.mark.parametrize("text,message", [
    ("a\tb\n\na\tb\tc\n", r"^f\.tsv line 3: expected two columns, got 3 column\(s\): 'a\\tb\\tc'$"),
    ("\n \n\t\n", r"^f\.tsv has no pairs$"),
])
def test_delimited_lines_name_the_bad_line_and_the_empty_text(text, message):
    # catches a count check that passes a line of more columns, and a reader that returns no rows without a word
    with pytest.raises(ValueError, match=message):
        delimited_lines(text, "f.tsv", separator="\t", columns=2, expected="two columns", what="pairs")


def test_translate_and_tag_report_a_wrong_column_count_the_same_way():
    # both readers cut their lines with delimited_lines (each wrote the loop and its message before)
    with pytest.raises(ValueError, match=r"^p\.tsv line 2: expected source<TAB>target .*, got 1 column\(s\): 'b'$"):
        parse_pairs("a\tx\nb\n", "p.tsv")
    with pytest.raises(ValueError, match=r"^t\.conll line 2: expected a token and its tag .*, got 1 column\(s\): 'b'$"):
        parse_conll("a O\nb\n", "t.conll")
