"""Helpers for simulator tests: a hand-driven clock and websocket receive loops."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

Msg = Any


def ws_connect(url: str, **kwargs: Any) -> connect:
    """A websockets client that buffers without limit: tests stop reading mid-stream, and a
    client whose queue is full stops reading the socket, so the server's close frame would
    wait behind unread data until the close timeout."""
    return connect(url, max_queue=None, **kwargs)


class ManualClock:
    """An injected exchange clock that moves only when the test says so: nothing is
    published between advances, so book and stream states can be compared exactly."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def decode_text(frame: str | bytes) -> Msg:
    return json.loads(frame)


def decode_gzip(frame: str | bytes) -> Msg:
    assert isinstance(frame, bytes), "HTX frames are binary"
    return json.loads(gzip.decompress(frame), parse_float=Decimal)


async def recv_until(
    ws: ClientConnection,
    predicate: Callable[[Msg], bool],
    *,
    decode: Callable[[str | bytes], Msg] = decode_text,
    timeout: float = 5.0,
    on_each: Callable[[Msg], None] | None = None,
) -> Msg:
    """Receive until a message satisfies ``predicate``; return it. ``on_each`` sees every
    message (including the matching one)."""
    async with asyncio.timeout(timeout):
        while True:
            msg = decode(await ws.recv())
            if on_each is not None:
                on_each(msg)
            if predicate(msg):
                return msg


async def collect(
    ws: ClientConnection,
    count: int,
    predicate: Callable[[Msg], bool],
    *,
    decode: Callable[[str | bytes], Msg] = decode_text,
    timeout: float = 5.0,
) -> list[Msg]:
    """The first ``count`` messages satisfying ``predicate``."""
    found: list[Msg] = []

    def enough(msg: Msg) -> bool:
        if predicate(msg):
            found.append(msg)
        return len(found) >= count

    await recv_until(ws, enough, decode=decode, timeout=timeout)
    return found


def apply_levels(side: dict[Decimal, Decimal], levels: list[list[Any]]) -> None:
    for price, qty in levels:
        p, q = Decimal(str(price)), Decimal(str(qty))
        if q == 0:
            side.pop(p, None)
        else:
            side[p] = q


def book_text(side: dict[Decimal, Decimal], bids: bool) -> list[list[Decimal]]:
    return [[p, side[p]] for p in sorted(side, reverse=bids)]
