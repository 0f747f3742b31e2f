"""Small helpers shared by the simulated REST APIs."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from ingest.sim.intervals import Interval

_encoder = msgspec.json.Encoder()


class BadRequest(Exception):
    """A request the real API would refuse; each exchange renders it in its own format."""

    def __init__(self, message: str, code: Any = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_encoder.encode(data), status=status, content_type="application/json",
        headers=headers,
    )


def dumps(data: Any) -> str:
    return _encoder.encode(data).decode()


def param_int(
    request: web.Request,
    name: str,
    default: int | None = None,
    *,
    low: int | None = None,
    high: int | None = None,
) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"invalid value {raw!r} for parameter {name!r}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise BadRequest(f"parameter {name!r}={value} is out of range [{low}, {high}]")
    return value


def strip_zeros(text: str) -> str:
    """'0.35280000' → '0.3528', '100.00' → '100'."""
    if "." not in text:
        return text
    return text.rstrip("0").rstrip(".")


def select_windows(
    iv: Interval,
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
    now_ms: int,
    *,
    containing_start: bool = False,
) -> list[int]:
    """Window open times, oldest first, the way exchanges page candles.

    With a start: windows from the first opening at/after ``start_ms`` (or the one containing
    it, with ``containing_start``) forward; with only an end: the last ``limit`` opening at or
    before it; with neither: the last ``limit`` up to now. A window opening after now (or
    after ``end_ms``) is never returned; the current, still-open window is.
    """
    last = iv.start(now_ms if end_ms is None else min(end_ms, now_ms))
    if limit <= 0:
        return []
    if start_ms is None:
        return iv.windows_back(last, limit)
    first = iv.start(start_ms)
    if first < start_ms and not containing_start:
        first = iv.end(first)
    return [s for s in iv.windows(first, limit) if s <= last]
