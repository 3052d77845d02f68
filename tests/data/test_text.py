"""read_text's errors name the file and the bad byte; the bundled corpus is clean plays."""

from __future__ import annotations

import gzip
import re
from importlib import resources

import pytest

from rnnkit.data import bundled_text, read_text


def test_bundled_shakespeare_is_clean_plays():
    text = bundled_text("shakespeare")
    size = len(text.encode("utf-8"))
    assert 0.9e6 <= size <= 1.2e6, f"bundled corpus is {size} bytes, expected 0.9-1.2 MB"
    for boilerplate in ("Project Gutenberg", "PROJECT GUTENBERG", "END OF", "*** START", "\r", "\ufeff"):
        assert boilerplate not in text, f"{boilerplate!r} at offset {text.index(boilerplate)}"
    assert len(set(text)) < 100, f"{len(set(text))} distinct characters"
    assert "\n\n\n\n" not in text, "a run of 3+ blank lines survived"
    assert text.startswith("HAMLET") and text.endswith("\n")
    assert "Who's there?" in text and "MACBETH" in text and "THE TEMPEST" in text


def test_bundled_file_and_sources_ship_in_the_package():
    data = resources.files("rnnkit.data")
    assert data.joinpath("SOURCES.md").is_file()
    header = data.joinpath("shakespeare.txt.gz").read_bytes()[:10]
    assert header[:2] == b"\x1f\x8b" and header[4:8] == b"\0\0\0\0", "gzip header: magic and mtime=0"
    assert gzip.decompress(data.joinpath("shakespeare.txt.gz").read_bytes()).decode() == bundled_text()


def test_unknown_bundled_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"no bundled text named 'tolstoy'; available: shakespeare"):
        bundled_text("tolstoy")


def test_read_text_strips_bom_and_normalizes_line_ends(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbfline one\r\nline two\rline three\n\xc3\xa9\n")
    assert read_text(path) == "line one\nline two\nline three\n\u00e9\n"
    assert read_text(str(path)) == read_text(path)


def test_read_text_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        read_text(path)


def test_read_text_directory(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        read_text(tmp_path)


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf"], ids=["empty", "bom_only"])
def test_read_text_empty(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(f"{path} is empty")):
        read_text(path)


def test_read_text_bad_utf8_gives_byte_offset_and_context(tmp_path):
    path = tmp_path / "latin1.txt"
    raw = "first line\ncaf\u00e9 au lait\n".encode("latin-1")  # \xe9 alone is not UTF-8
    path.write_bytes(raw)
    with pytest.raises(ValueError) as excinfo:
        read_text(path)
    message = str(excinfo.value)
    assert str(path) in message
    offset = raw.index(b"\xe9")
    assert offset == 14
    assert f"is not UTF-8 text: byte 0xe9 at offset {offset} (line 2)" in message
    assert "b'line\\ncaf' b'\\xe9' b' au lait'" in message, message


def test_read_text_nul_byte_says_binary_with_offset(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"PK\x03\x04" + b"abc\x00\xff")
    with pytest.raises(ValueError, match=re.escape(f"{path} looks like a binary file, not text: NUL byte at offset 7")):
        read_text(path)


def test_read_text_utf16_is_reported_as_binary(tmp_path):
    path = tmp_path / "utf16.txt"
    path.write_bytes("hello".encode("utf-16-le"))
    with pytest.raises(ValueError, match="NUL byte at offset 1.*UTF-16"):
        read_text(path)
