"""JSON Lines reading shared by classify's data files and ASR manifests (rnnkit.data.text.json_lines)."""

from __future__ import annotations

import pytest

from rnnkit.data.manifest import read_manifest
from rnnkit.data.text import json_lines
from rnnkit.tasks.classify import read_rows


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
