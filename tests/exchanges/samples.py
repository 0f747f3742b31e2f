"""Where the tests find real exchange data: the 2021 captures in ``../shared/samples/``
(beside the checkout, here and in CI) and the documented formats in ``tests/fixtures/``.

Captures are read with the project's one reader, ``ingest.transport.recorder.read_capture``;
``Entry`` adds the 1-based line number (tests pin specific frames by line) and the payload
as the bytes that were on the wire."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ingest.transport.recorder import CaptureStats, read_capture

REPO = Path(__file__).resolve().parents[2]
CAPTURES = REPO.parent / "shared" / "samples" / "cryptofeed"
FIXTURES = REPO / "tests" / "fixtures" / "exchanges"


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str  # connect | sent | recv | rest | config
    ts: float | None  # unix seconds (receive or send time)
    url: str | None  # for recv: the connection's URL
    data: bytes  # the body or frame as it was on the wire (HTX: still gzip)
    line_no: int


@cache
def capture(name: str) -> tuple[Entry, ...]:
    path = CAPTURES / name
    stats = CaptureStats()
    records = list(read_capture(path, stats=stats))
    # read_capture skips blank lines only (and would count anything else it skips), so
    # the non-blank lines and the records pair up one to one.
    line_nos = [n for n, line in enumerate(path.read_bytes().split(b"\n"), 1) if line.strip()]
    assert stats.bad_lines == stats.torn_lines == stats.long_lines == 0, stats
    assert len(line_nos) == len(records), (name, len(line_nos), len(records))
    return tuple(
        Entry(r.kind, r.ts, r.url, r.payload.encode() if isinstance(r.payload, str)
              else r.payload or b"", no)
        for r, no in zip(records, line_nos, strict=True)
    )


def received(name: str) -> list[Entry]:
    """Frames the client received, in file order."""
    return [e for e in capture(name) if e.kind == "recv"]


def rest(name: str) -> list[Entry]:
    return [e for e in capture(name) if e.kind == "rest"]


def frame_at(name: str, line_no: int) -> Entry:
    """The entry on a given (1-based) line of a capture: tests pin specific frames."""
    for e in capture(name):
        if e.line_no == line_no:
            return e
    raise LookupError(f"{name}: no entry on line {line_no}")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)
