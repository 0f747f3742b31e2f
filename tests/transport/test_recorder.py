"""Capture writing and reading: our files and cryptofeed's real ones."""

from __future__ import annotations

import gzip
import json
import queue
from pathlib import Path

import pytest

from ingest.transport.recorder import (
    CaptureRecord,
    CaptureStats,
    Recorder,
    format_line,
    parse_line,
    read_capture,
)
from tests.transport.conftest import SAMPLES

CRYPTOFEED = SAMPLES / "cryptofeed"
HTX_FRAME = gzip.compress(b'{"ping": 1618678073643}')


def write_sample(rec: Recorder) -> list[CaptureRecord]:
    url = "wss://api.huobi.pro/ws"
    rec.configuration("htx.1", {"trades": ["BTC-USDT"]})
    rec.connected("htx.1", url, 1618678069.69958)
    rec.sent("htx.1", url, 1618678070.5228748, '{"sub":"market.btcusdt.trade.detail","id":1}')
    rec.received("htx.1", 1618678070.733454, HTX_FRAME)
    rec.received("htx.1", 1618678070.8, '{"text":"frame"}')
    rec.rest("htx.1", "https://api.huobi.pro/market/depth?symbol=btcusdt", 1618678071.0, b'{"a":1}')
    return [
        CaptureRecord("config", None, None, '{"trades":["BTC-USDT"]}'),
        CaptureRecord("connect", url, 1618678069.69958, None),
        CaptureRecord("sent", url, 1618678070.5228748,
                      '{"sub":"market.btcusdt.trade.detail","id":1}'),
        CaptureRecord("recv", url, 1618678070.733454, HTX_FRAME),
        CaptureRecord("recv", url, 1618678070.8, '{"text":"frame"}'),
        CaptureRecord("rest", "https://api.huobi.pro/market/depth?symbol=btcusdt",
                      1618678071.0, b'{"a":1}'),
    ]


def test_round_trip_text_binary_and_rest(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    expected = write_sample(rec)
    rec.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.startswith("htx.1.") and files[0].suffix == ".gz"
    assert list(read_capture(tmp_path)) == expected
    text = gzip.decompress(files[0].read_bytes()).decode()
    assert "wss://api.huobi.pro/ws <-> 1618678069.69958\n" in text
    assert f"1618678070.733454: {HTX_FRAME!r}\n" in text  # a bytes literal, as cryptofeed


@pytest.mark.parametrize(
    "payload",
    [
        '{"multi":\n"line"}',
        "b'looks like bytes'",
        "'quoted'",
        "it's \"both\" quotes\r\n",
        "unicode ✓ and \x00",
        "",
        b"",
        b"\x00\xff\n'\"",
    ],
)
def test_awkward_payloads_survive(payload: str | bytes) -> None:
    line = format_line("recv", None, 1.5, payload)
    assert "\n" not in line
    assert parse_line(line) == CaptureRecord("recv", None, 1.5, payload)


def test_rotation_by_size_repeats_the_connect_line(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, max_file_bytes=200)
    rec.connected("binance.1", "wss://stream.binance.com:9443/ws", 1.0)
    for i in range(20):
        rec.received("binance.1", 2.0 + i, json.dumps({"i": i, "pad": "x" * 40}))
    rec.end("binance.1")
    rec.close()
    files = sorted(tmp_path.iterdir(), key=lambda p: int(p.name.split(".")[-2]))
    assert len(files) > 3
    for path in files:  # every segment reads on its own
        first = next(iter(read_capture(path)))
        assert first == CaptureRecord("connect", "wss://stream.binance.com:9443/ws", 1.0, None)
    records = [r for r in read_capture(files) if r.kind == "recv"]
    assert [json.loads(r.payload)["i"] for r in records] == list(range(20))  # type: ignore[arg-type]
    assert all(r.url == "wss://stream.binance.com:9443/ws" for r in records)


def test_after_a_failed_write_the_next_file_opens_with_the_connect_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write error closes the broken file; the next one must start with its connection's
    URL, or every file of the directory is refused by ``ingest replay``."""
    rec = Recorder(tmp_path)
    emit = rec._emit
    failures = iter([OSError(28, "No space left on device"), UnicodeEncodeError(
        "utf-8", "\ud800", 0, 1, "surrogates not allowed")])

    def flaky(seg: object, line: bytes) -> None:
        if b'"fail"' in line:
            raise next(failures)
        emit(seg, line)  # type: ignore[arg-type]

    monkeypatch.setattr(rec, "_emit", flaky)
    rec.connected("binance.1", "wss://stream.binance.com:9443/ws", 1.0)
    rec.received("binance.1", 2.0, '{"i":1}')
    rec.received("binance.1", 3.0, '{"fail":1}')  # an OSError: the file is closed
    rec.received("binance.1", 4.0, '{"i":2}')
    rec.received("binance.1", 5.0, '{"fail":2}')  # anything else: the thread goes on
    rec.received("binance.1", 6.0, '{"i":3}')
    assert rec.flush()
    rec.close()
    assert rec.write_errors == 2
    files = sorted(tmp_path.iterdir())
    assert len(files) == 3
    for path in files:
        assert next(iter(read_capture(path))).kind == "connect"
    records = [r for r in read_capture(files) if r.kind == "recv"]
    assert sorted(r.payload for r in records) == ['{"i":1}', '{"i":2}', '{"i":3}']
    assert all(r.url == "wss://stream.binance.com:9443/ws" for r in records)


def test_torn_final_line_of_a_plain_file_is_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "crashed.ws.1.0"
    path.write_text('wss://x/ws <-> 1.0\n2.0: {"a":1}\n3.0: {"a":2')
    stats = CaptureStats()
    records = list(read_capture(path, stats=stats))
    assert [r.kind for r in records] == ["connect", "recv"]
    assert stats.torn_lines == 1 and stats.records == 2


def test_truncated_gzip_keeps_the_complete_lines(tmp_path: Path) -> None:
    lines = "wss://x/ws <-> 1.0\n" + "".join(f'{i}.5: {{"n":{i}}}\n' for i in range(2000))
    blob = gzip.compress(lines.encode())
    path = tmp_path / "crashed.gz"
    path.write_bytes(blob[: len(blob) * 2 // 3])  # the writer died mid-stream
    stats = CaptureStats()
    records = list(read_capture(path, stats=stats))
    assert stats.torn_lines == 1
    assert 100 < len(records) < 2001
    ns = [json.loads(r.payload)["n"] for r in records[1:]]  # type: ignore[arg-type]
    assert ns == list(range(len(ns)))  # a clean prefix, no half line


def test_flushed_recording_is_readable_while_still_open(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    expected = write_sample(rec)
    assert rec.flush()
    (path,) = tmp_path.iterdir()
    stats = CaptureStats()
    # The gzip stream has no trailer yet: every flushed line reads, the end counts as torn.
    assert list(read_capture(path, stats=stats)) == expected
    assert stats.torn_lines == 1
    rec.close()


def test_garbage_and_long_lines_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "mixed"
    path.write_text("nonsense without separator\n" + "1.0: " + "x" * 5000 + "\n2.0: ok\n")
    stats = CaptureStats()
    records = list(read_capture(path, stats=stats, max_line_bytes=1000))
    assert records == [CaptureRecord("recv", None, 2.0, "ok")]
    assert stats.bad_lines == 1 and stats.long_lines == 1


def test_a_connection_whose_connect_line_was_dropped_is_not_recorded(tmp_path: Path) -> None:
    """A file without its connect line would make ``ingest replay`` refuse the directory:
    the connection's frames are dropped and counted instead, the others recorded."""
    rec = Recorder(tmp_path)
    put = rec._queue.put_nowait
    full_once = iter([True])

    def full_for_the_first_connect(op: tuple[object, ...]) -> None:
        if op[0] == "line" and op[2] == "connect" and next(full_once, False):
            raise queue.Full
        put(op)

    rec._queue.put_nowait = full_for_the_first_connect  # type: ignore[method-assign]
    rec.connected("gate.1", "wss://api.gateio.ws/ws/v4/", 1.0)  # dropped: the queue was full
    rec.connected("gate.2", "wss://api.gateio.ws/ws/v4/", 1.5)
    for ts in (2.0, 3.0):
        rec.sent("gate.1", "wss://api.gateio.ws/ws/v4/", ts, "sub")
        rec.received("gate.1", ts, "lost")
        rec.received("gate.2", ts, "kept")
    rec.end("gate.1")
    rec.connected("gate.1", "wss://api.gateio.ws/ws/v4/", 4.0)  # a stream id used again
    rec.received("gate.1", 5.0, "after")
    rec.close()
    assert rec.dropped == 5  # the connect line and the four lines of its connection
    for path in tmp_path.iterdir():
        assert next(iter(read_capture(path))).kind == "connect", path.name
    payloads = sorted(r.payload for r in read_capture(tmp_path) if r.kind == "recv")
    assert payloads == ["after", "kept", "kept"]


def test_a_close_the_full_queue_did_not_take_is_sent_before_the_next_line(
    tmp_path: Path,
) -> None:
    rec = Recorder(tmp_path)
    put = rec._queue.put_nowait
    full = [True]

    def full_while_asked(op: tuple[object, ...]) -> None:
        if full[0]:
            raise queue.Full
        put(op)

    rec.connected("binance.1", "wss://stream.binance.com:9443/ws", 1.0)
    rec.received("binance.1", 2.0, "one")
    assert rec.flush()
    rec._queue.put_nowait = full_while_asked  # type: ignore[method-assign]
    rec.end("binance.1")  # the queue is full: kept, not lost
    assert rec.dropped == 0 and rec._unended == {"binance.1"}
    full[0] = False
    rec.connected("binance.2", "wss://stream.binance.com:9443/ws", 3.0)
    assert rec._unended == set()
    assert rec.flush()
    assert "binance.1" not in rec._segments  # closed by the writer: the file is complete
    rec.close()
    (first,) = [p for p in tmp_path.iterdir() if p.name.startswith("binance.1.")]
    assert [r.payload for r in read_capture(first) if r.kind == "recv"] == ["one"]


def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, max_pending=1)
    for i in range(10_000):
        rec.received("s", float(i), "x")
    rec.close()
    assert rec.dropped > 0
    assert rec.dropped + rec.lines_written == 10_000


@pytest.mark.parametrize(
    ("name", "counts"),
    [
        ("BINANCE.ws.1.0", {"connect": 1, "recv": 265}),
        ("GATEIO.ws.1.0", {"connect": 1, "sent": 22, "recv": 239}),
        ("HUOBI.ws.44.0", {"connect": 1, "sent": 26, "recv": 362}),
        ("BINANCE.0", {"rest": 1, "config": 1}),
        ("BINANCE.http.0.0", {"rest": 4}),
        ("GATEIO.http.0.0", {"rest": 10}),
        ("HUOBI.0", {"rest": 1, "config": 1}),
    ],
)
def test_reads_cryptofeed_captures(name: str, counts: dict[str, int]) -> None:
    path = CRYPTOFEED / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    stats = CaptureStats()
    seen: dict[str, int] = {}
    for record in read_capture(path, stats=stats):
        seen[record.kind] = seen.get(record.kind, 0) + 1
    assert seen == counts
    assert stats.torn_lines == stats.bad_lines == stats.long_lines == 0


def test_cryptofeed_htx_frames_are_gzip_bytes_with_six_pings() -> None:
    path = CRYPTOFEED / "HUOBI.ws.44.0"
    if not path.exists():
        pytest.skip(f"{path} not present")
    frames = [r for r in read_capture(path) if r.kind == "recv"]
    assert all(isinstance(r.payload, bytes) and r.url == "wss://api.huobi.pro/ws" for r in frames)
    decoded = [gzip.decompress(r.payload) for r in frames]  # type: ignore[arg-type]
    assert sum(d.startswith(b'{"ping"') for d in decoded) == 6
    depth = [r for r in read_capture(CRYPTOFEED / "BINANCE.ws.1.0") if r.kind == "recv"]
    assert sum('"depthUpdate"' in r.payload for r in depth) == 177  # type: ignore[operator]
