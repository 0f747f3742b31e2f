"""DirectClientConnection's own framing against the library's, on the same bytes.

Each case is a server's byte stream (the handshake response, then frames), cut into socket
reads at arbitrary points and fed to two connections: ``DirectClientConnection`` with its
callbacks set, and the library's plain ``ClientConnection``. Both must end with the same
messages in the same order (direct deliveries, then what the direct one left queued for
``recv()``), the same replies written (pongs, close frames) and the same close code.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from ingest.transport.connection import DirectClientConnection

MAX_SIZE = 70_000
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False
        self.paused = False

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


@dataclass
class Outcome:
    direct: list[str | bytes] = field(default_factory=list)  # on_message, in order
    queued: list[str | bytes] = field(default_factory=list)  # then recv(), in order
    controls: int = 0
    invalid: list[bytes] = field(default_factory=list)
    replies: list[tuple[Opcode, bytes]] = field(default_factory=list)  # frames we wrote
    close_code: int | None = None

    @property
    def messages(self) -> list[str | bytes]:
        return self.direct + self.queued


def response_for(key: str) -> bytes:
    accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n")


def frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=False, extensions=[])


def client_frames(written: bytes) -> list[tuple[Opcode, bytes]]:
    """What the client wrote, read back by a server: its frames after the request."""
    server = ServerProtocol(max_size=None)
    server.receive_data(written)
    return [(e.opcode, bytes(e.data)) for e in server.events_received() if isinstance(e, Frame)]


def connecting(direct: bool) -> tuple[ClientConnection, FakeTransport, bytes]:
    """A connection that has sent its handshake request, its transport, and the server's
    101 response to feed it."""
    protocol = ClientProtocol(parse_uri("ws://exchange.test/ws"), max_size=MAX_SIZE)
    cls = DirectClientConnection if direct else ClientConnection
    conn = cls(protocol, ping_interval=None, ping_timeout=None, close_timeout=1)
    transport = FakeTransport()
    conn.connection_made(transport)
    request = protocol.connect()
    protocol.send_request(request)
    return conn, transport, response_for(request.headers["Sec-WebSocket-Key"])


async def run(stream: bytes, cuts: list[int], direct: bool, expected: int) -> Outcome:
    """Feed the handshake response + ``stream``, cut at ``cuts``; collect what comes out."""
    conn, transport, response = connecting(direct)
    protocol = conn.protocol
    out = Outcome()
    if isinstance(conn, DirectClientConnection):
        conn.on_message = out.direct.append
        conn.on_invalid_text = out.invalid.append

        def control() -> None:
            out.controls += 1

        conn.on_control = control
    data = response + stream
    last = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        if cut > last:
            conn.data_received(data[last:cut])
            last = cut
    try:
        while len(out.messages) < expected:
            out.queued.append(await asyncio.wait_for(conn.recv(), 5))
    except ConnectionClosed:
        pass  # what was queued before the close has been read
    out.replies = client_frames(bytes(transport.written))
    if protocol.close_sent is not None:
        out.close_code = int(protocol.close_sent.code)
    conn.connection_lost(None)
    return out


async def both(stream: bytes, cuts: list[int], expected: int) -> tuple[Outcome, Outcome]:
    ours = await run(stream, cuts, True, expected)
    library = await run(stream, cuts, False, expected)
    assert ours.messages == library.messages
    assert ours.replies == library.replies
    assert ours.close_code == library.close_code
    assert ours.invalid == []
    return ours, library


# -- streams of valid frames ---------------------------------------------------------------

_payload = st.one_of(
    st.binary(max_size=130),
    st.sampled_from([125, 126, 127, 65_535, 65_536]).map(lambda n: b"x" * n),
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[str | bytes], int, int | None]:
    """(bytes, the data messages in order, the number of pings and pongs, the index of the
    first fragmented message)."""
    parts: list[bytes] = []
    messages: list[str | bytes] = []
    controls = 0
    first_fragment: int | None = None
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["text", "binary", "ping", "pong", "fragmented"]))
        data = draw(_payload)
        if kind == "text":
            text = data.decode("latin-1")
            parts.append(frame(Opcode.TEXT, text.encode()))
            messages.append(text)
        elif kind == "binary":
            parts.append(frame(Opcode.BINARY, data))
            messages.append(data)
        elif kind in ("ping", "pong"):
            parts.append(frame(Opcode.PING if kind == "ping" else Opcode.PONG, data[:125]))
            controls += 1
        else:  # a text message in pieces, a ping between them
            text = data.decode("latin-1")
            raw = text.encode()
            half = len(raw) // 2
            parts += [frame(Opcode.TEXT, raw[:half], False), frame(Opcode.PING, b"mid"),
                      frame(Opcode.CONT, raw[half:])]
            if first_fragment is None:
                first_fragment = len(messages)
            messages.append(text)
            controls += 1
    return b"".join(parts), messages, controls, first_fragment


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.lists(st.integers(0, 200_000), max_size=12))
def test_same_messages_replies_and_order_as_the_library(
    case: tuple[bytes, list[str | bytes], int, int | None], cuts: list[int]
) -> None:
    stream, messages, controls, first_fragment = case

    async def check() -> None:
        ours, _ = await both(stream, cuts, len(messages))
        assert ours.messages == messages
        assert ours.controls == controls
        # Until a fragmented message, every message went the direct way; from it on, the
        # library's queue holds them (nothing reads it here).
        assert ours.direct == messages[:first_fragment]

    asyncio.run(check())


def test_every_cut_of_the_handshake_and_first_frames() -> None:
    stream = frame(Opcode.TEXT, b'{"a":1}') + frame(Opcode.PING, b"p") + frame(
        Opcode.BINARY, b"\x00\x01" * 200)

    async def check() -> None:
        for cut in range(0, 260):  # inside the response, across its end, inside the frames
            for second in (cut + 1, cut + 7, cut + 130):
                ours, _ = await both(stream, [cut, second], 2)
                assert ours.direct == ['{"a":1}', b"\x00\x01" * 200]
                assert ours.replies == [(Opcode.PONG, b"p")]

    asyncio.run(check())


# -- frames the library refuses or ends the stream with -------------------------------------


def test_frames_the_library_refuses_close_the_same_way() -> None:
    ok = frame(Opcode.TEXT, b"before")
    masked = Frame(Opcode.TEXT, b"masked").serialize(mask=True, extensions=[])
    cases = {
        "oversize": (ok + frame(Opcode.BINARY, b"x" * (MAX_SIZE + 1)) + ok, 1009),
        "oversize header only": (ok + frame(Opcode.BINARY, b"x" * (MAX_SIZE + 1))[:10], 1009),
        "masked": (ok + masked + ok, 1002),
        "reserved bit": (ok + bytes([0xC1, 1]) + b"z" + ok, 1002),
        "reserved opcode": (ok + bytes([0x83, 0]) + ok, 1002),
        "stray continuation": (ok + frame(Opcode.CONT, b"c") + ok, 1002),
        "data inside a fragmented message": (
            ok + frame(Opcode.TEXT, b"a", False) + ok + frame(Opcode.CONT, b"b"), 1002),
        "server closes": (ok + frame(Opcode.CLOSE, Close(1001, "bye").serialize()) + ok, 1001),
    }

    async def check() -> None:
        for name, (stream, code) in cases.items():
            for cuts in ([], [len(ok) + 150], [1, 2, 3, 200, 201]):
                ours, _ = await both(stream, cuts, 1)
                assert ours.messages[:1] == ["before"], name
                assert ours.close_code == code, (name, cuts)

    asyncio.run(check())


def test_text_that_is_not_utf8_is_reported_and_the_stream_goes_on() -> None:
    stream = frame(Opcode.TEXT, b"\xff\xfe") + frame(Opcode.TEXT, b"after")

    async def check() -> None:
        ours = await run(stream, [150], True, 1)
        assert ours.invalid == [b"\xff\xfe"] and ours.direct == ["after"]
        assert ours.close_code is None

    asyncio.run(check())


def test_a_partial_frame_waits_for_the_rest_and_is_bounded() -> None:
    big = b"y" * 60_000
    stream = frame(Opcode.BINARY, big)

    async def check() -> None:
        conn, _, response = connecting(True)
        assert isinstance(conn, DirectClientConnection)
        got: list[Any] = []
        conn.on_message = got.append
        conn.data_received(response)
        conn.data_received(stream[:4096])
        growing = conn._partial
        for i in range(4096, len(stream), 4096):  # socket reads of 4 KiB
            conn.data_received(stream[i:i + 4096])
            if not got:  # one buffer grows in place: not a copy of it per read
                assert conn._partial is growing and len(growing) == min(i + 4096, len(stream))
        assert got == [big] and conn._partial == b""
        conn.connection_lost(None)

    asyncio.run(check())


def test_data_frame_inside_a_fragmented_message_fails_even_while_recv_waits() -> None:
    """The reader task may already hold the first fragment (the library's queue is then
    empty): a complete data frame before the last fragment is still a protocol error."""

    async def one(direct: bool) -> int | None:
        conn, _, response = connecting(direct)
        protocol = conn.protocol
        if isinstance(conn, DirectClientConnection):
            conn.on_message = lambda message: None
        conn.data_received(response)
        reader = asyncio.ensure_future(conn.recv())
        conn.data_received(frame(Opcode.TEXT, b"first half", False))
        for _ in range(5):  # let the reader take the fragment (no timing: loop turns)
            await asyncio.sleep(0)
        assert not conn.recv_messages.frames.queue  # taken by the waiting reader
        conn.data_received(frame(Opcode.TEXT, b"not a continuation"))
        reader.cancel()
        conn.connection_lost(None)
        return None if protocol.close_sent is None else int(protocol.close_sent.code)

    async def check() -> None:
        assert await one(True) == await one(False) == 1002

    asyncio.run(check())
