"""Reader for recorded exchange traffic (cryptofeed's sample_data format; see
``shared/samples/README.md``). Pure: give it the file's text, get entries back. Used by
the parser tests, the book replay tests and benchmarks.

Line formats::

    https://URL -> RECV_TS: BODY        a REST response
    configuration: {...}                the capture's channels and symbols
    wss://URL <-> TS                    websocket connected
    wss://URL <- TS: PAYLOAD            a frame the client sent
    RECV_TS: PAYLOAD                    a frame received

HTX frames are written as Python bytes literals of the gzip data; ``data`` holds those
bytes still compressed, exactly as they came off the wire.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

EntryKind = Literal["rest", "config", "connect", "sent", "recv"]


@dataclass(frozen=True, slots=True)
class Entry:
    kind: EntryKind
    ts: float | None  # unix seconds (receive or send time)
    url: str | None
    data: bytes  # the body or frame as it was on the wire
    line_no: int


def _payload(text: str) -> bytes:
    if text.startswith(("b'", 'b"')):
        value = ast.literal_eval(text)
        if not isinstance(value, bytes):
            raise ValueError("not a bytes literal")
        return value
    return text.encode()


def iter_capture(text: str) -> Iterator[Entry]:
    for no, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        if line.startswith("configuration: "):
            yield Entry("config", None, None, line[len("configuration: "):].encode(), no)
        elif line.startswith(("http://", "https://")):
            url, _, rest = line.partition(" -> ")
            ts, _, body = rest.partition(": ")
            yield Entry("rest", float(ts), url, body.encode(), no)
        elif line.startswith(("ws://", "wss://")):
            if " <-> " in line:
                url, _, ts = line.partition(" <-> ")
                yield Entry("connect", float(ts), url, b"", no)
            else:
                url, _, rest = line.partition(" <- ")
                ts, _, body = rest.partition(": ")
                yield Entry("sent", float(ts), url, _payload(body), no)
        else:
            ts, _, body = line.partition(": ")
            yield Entry("recv", float(ts), None, _payload(body), no)
