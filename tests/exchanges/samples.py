"""Where the tests find real exchange data: the 2021 captures in ``../shared/samples/``
(beside the checkout, here and in CI) and the documented formats in ``tests/fixtures/``."""

from __future__ import annotations

import gzip
from functools import cache
from pathlib import Path

from ingest.exchanges.capture import Entry, iter_capture

REPO = Path(__file__).resolve().parents[2]
CAPTURES = REPO.parent / "shared" / "samples" / "cryptofeed"
FIXTURES = REPO / "tests" / "fixtures" / "exchanges"


@cache
def capture(name: str) -> tuple[Entry, ...]:
    return tuple(iter_capture((CAPTURES / name).read_text(encoding="utf-8")))


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
