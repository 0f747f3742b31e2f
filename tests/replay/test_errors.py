"""Bad input ends as exactly one line on stderr and exit code 2, before any output and
before any database is touched; bad frames inside a good capture are only counted."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pytest

from .util import CAPTURES, ingest

GOOD = str(CAPTURES / "BINANCE.ws.1.0")


def one_line_error(tmp_path: Path, *args: str) -> str:
    result = ingest("replay", *args, cwd=tmp_path)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


def _write(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = tmp_path / name
        path.write_bytes(content)
        return path
    return make


CASES = {
    "text": (_write("notes.txt", b"hello, this is not a capture\n"), "unknown format"),
    "json": (_write("frames.json", b'{"stream":"btcusdt@trade","data":{}}\n'), "unknown format"),
    "binary": (_write("blob.bin", bytes(range(256)) * 4), "unknown format"),
    "gzip of text": (_write("x.gz", gzip.compress(b"SELECT 1;\n")), "unknown format"),
    "broken gzip": (_write("y.gz", b"\x1f\x8b\x08\x00garbage-not-deflate"), "cannot read it"),
    "no connect line": (_write("mid.ws", b"1633998512.06: {\"a\":1}\n"),
                        "frames come before any 'wss://URL <-> TS' connect line"),
    "unknown exchange": (_write("k.ws", b"wss://ws.kraken.com/v2 <-> 1633998511.1\n"),
                         "unknown exchange for wss://ws.kraken.com/v2"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dry_run", [True, False])
def test_bad_file(case: str, dry_run: bool, tmp_path: Path) -> None:
    make, expected = CASES[case]
    path = make(tmp_path)
    # Given after a good file: nothing is printed or written before every file is checked.
    # Without --dry-run and without a database configured, the embedded cluster would be
    # started: the check comes first, so it never is.
    args = ["--dry-run"] if dry_run else []
    line = one_line_error(tmp_path, *args, GOOD, str(path))
    assert line.startswith(f"ingest replay: error: {path}: ")
    assert expected in line
    assert not (tmp_path / ".ingest").exists()


def test_missing_file(tmp_path: Path) -> None:
    line = one_line_error(tmp_path, "--dry-run", GOOD, str(tmp_path / "nope.ws"))
    assert line == f"ingest replay: error: {tmp_path / 'nope.ws'}: no such file"


def test_no_file(tmp_path: Path) -> None:
    line = one_line_error(tmp_path, "--dry-run")
    assert "the following arguments are required: FILE" in line


def test_empty_file_replays_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty.gz").write_bytes(gzip.compress(b""))
    (tmp_path / "blank").write_bytes(b"\n\n")
    result = ingest("replay", "--dry-run", str(tmp_path / "empty.gz"), str(tmp_path / "blank"),
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "replay: 2 files, 0 capture lines" in result.stderr


def test_bad_frames_are_counted_not_fatal(tmp_path: Path) -> None:
    lines = (CAPTURES / "BINANCE.ws.1.0").read_bytes().splitlines(keepends=True)
    damaged = [*lines[:5], b"1633998512.5: {\"stream\":\"nknusdt@depth@100ms\",\"data\":\n",
               b"1633998512.6: \xff\xfe not utf-8\n", b"this line is no capture line\n",
               *lines[5:]]
    path = tmp_path / "BINANCE.ws.1.0.gz"
    path.write_bytes(gzip.compress(b"".join(damaged))[:-20])  # and the gzip stream cut short
    result = ingest("replay", "--dry-run", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 unreadable, 1 torn" in result.stderr
    assert "1 x binance: " in result.stderr  # the truncated JSON frame
    assert '"type":"trade"' in result.stdout
