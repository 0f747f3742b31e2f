"""Frame pre-processing that must never trust the sender: bounded gzip inflation.

``websockets`` enforces ``max_size`` on the frame as received, but HTX gzips every frame
itself, so the inflated size is ours to bound: 200 KB of gzip can expand to 200 MiB. The
decompressor stops at ``max_bytes`` and the frame is rejected (counted by the caller),
instead of the process allocating whatever the peer asks for.
"""

from __future__ import annotations

import zlib

from ingest.errors import ParseError

DEFAULT_MAX_INFLATED_BYTES = 4 * 1024 * 1024
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip header and trailer, not raw deflate or zlib


class FrameRejected(ParseError):
    """A frame was refused before parsing (too large once inflated, corrupt, wrong type).

    ``reason`` is a short fixed code fit for a metric label.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def gunzip_bounded(data: bytes | str, max_bytes: int = DEFAULT_MAX_INFLATED_BYTES) -> bytes:
    """Inflate one gzip member, refusing output larger than ``max_bytes``."""
    if isinstance(data, str):
        raise FrameRejected("not_binary", "expected a gzip binary frame, got text")
    inflater = zlib.decompressobj(_GZIP_WBITS)
    try:
        # Ask for one byte more than allowed: getting it proves the frame is too big
        # without inflating the rest.
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise FrameRejected("bad_gzip", str(exc)) from None
    if len(out) > max_bytes:
        raise FrameRejected("too_large", f"inflates beyond {max_bytes} bytes")
    if not inflater.eof:
        raise FrameRejected("bad_gzip", "truncated gzip stream")
    return out
