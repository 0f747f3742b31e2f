"""Raw frame capture in cryptofeed's line format, and one reader for both.

One record per line, UTF-8 (the format of cryptofeed's ``sample_data``)::

    wss://URL <-> TS             the websocket connected
    wss://URL <- TS: PAYLOAD     a message we sent (subscribe, pong)
    TS: PAYLOAD                  a frame received, on the file's last connected URL
    https://URL -> TS: BODY      a REST response
    configuration: JSON          what the capture subscribed to

``TS`` is Unix seconds as a float. ``PAYLOAD`` is the text frame as received, except that a
binary frame is written as a Python bytes literal (``b'\\x1f\\x8b...'``, HTX's gzip, as in
cryptofeed's ``HUOBI.ws.44.0``), and a text frame that contains a line break or would
read as a literal is written as a single-quoted Python str literal.

Files: ``DIR/STREAM.YYYYmmddTHHMMSSZ.N.gz``, one stream per connection, gzip, rotated by
size (uncompressed bytes) and age. A continuation segment starts with its connection's
connect line (same ``TS``), so every file reads on its own.

Writing happens on one thread behind a bounded queue: the event loop only enqueues, and a
slow disk costs dropped (counted) lines, never a stalled feed. Files are sync-flushed every
``flush_interval_s``, so a crash loses at most that much plus a torn last line, which the
reader skips and counts.
"""

from __future__ import annotations

import ast
import gzip
import json
import queue
import re
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NamedTuple

from ingest.logs import get_logger

Payload = str | bytes
_log = get_logger("ingest.transport.recorder")
_GZIP_MAGIC = b"\x1f\x8b"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


# -- the line format (pure) -------------------------------------------------------------


def _str_literal(text: str) -> str:
    """A Python str literal that always starts with a single quote."""
    lit = repr(text)
    if lit.startswith('"'):  # repr chose double quotes: text has ' but no "
        lit = "'" + lit[1:-1].replace("'", "\\'") + "'"
    return lit


def format_payload(payload: Payload) -> str:
    if isinstance(payload, bytes | bytearray | memoryview):
        return repr(bytes(payload))
    if "\n" in payload or "\r" in payload or payload.startswith(("b'", 'b"', "'")):
        return _str_literal(payload)
    return payload


def decode_payload(text: str) -> Payload:
    if text.startswith(("b'", 'b"', "'")):
        value = ast.literal_eval(text)
        if not isinstance(value, bytes | str):
            raise ValueError("payload literal is neither bytes nor str")
        return value
    return text


def format_line(kind: str, url: str | None, ts: float | None, payload: Payload | None) -> str:
    text = format_payload("" if payload is None else payload)
    if kind == "recv":
        return f"{ts!r}: {text}"
    if kind == "connect":
        return f"{url} <-> {ts!r}"
    if kind == "sent":
        return f"{url} <- {ts!r}: {text}"
    if kind == "rest":
        return f"{url} -> {ts!r}: {text}"
    if kind == "config":
        return f"configuration: {text}"
    raise ValueError(f"unknown capture record kind {kind!r}")


class CaptureRecord(NamedTuple):
    kind: str  # connect | sent | recv | rest | config
    url: str | None  # for recv: the file's last connected URL (None before any)
    ts: float | None
    payload: Payload | None


def parse_line(text: str, current_url: str | None = None) -> CaptureRecord | None:
    """One line (without its newline) to a record; None for a blank line.

    Raises ``ValueError`` (or ``SyntaxError`` from a broken literal) for anything else.
    """
    if not text.strip():
        return None
    if text.startswith("configuration:"):
        return CaptureRecord("config", None, None, text[len("configuration:"):].strip())
    if text.startswith(("wss://", "ws://", "https://", "http://")):
        url, op, rest = text.split(" ", 2)
        if op == "<->":
            return CaptureRecord("connect", url, float(rest), None)
        ts, payload = rest.split(": ", 1)
        kinds = {"<-": "sent", "->": "rest"}
        if op not in kinds:
            raise ValueError(f"unknown capture operator {op!r}")
        return CaptureRecord(kinds[op], url, float(ts), decode_payload(payload))
    ts, payload = text.split(": ", 1)
    return CaptureRecord("recv", current_url, float(ts), decode_payload(payload))


# -- reading ----------------------------------------------------------------------------


@dataclass
class CaptureStats:
    records: int = 0
    torn_lines: int = 0  # an unterminated last line or a gzip stream cut short (a crash)
    bad_lines: int = 0  # lines that match no known form
    long_lines: int = 0  # skipped: longer than max_line_bytes


def _expand(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    out: list[Path] = []
    for item in map(Path, items):
        out.extend(sorted(p for p in item.iterdir() if p.is_file()) if item.is_dir() else [item])
    return out


def _open(path: Path) -> IO[bytes]:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _lines(path: Path, stats: CaptureStats, max_line_bytes: int) -> Iterator[bytes]:
    with _open(path) as f:
        skipping = False  # inside a line that is too long
        while True:
            try:
                raw = f.readline(max_line_bytes + 1)
            except (EOFError, OSError, zlib.error):  # gzip cut short or corrupt: a crash mid-write
                stats.torn_lines += 1
                return
            if not raw:
                return
            complete = raw.endswith(b"\n")
            if skipping:
                skipping = not complete
                continue
            if not complete:
                if len(raw) > max_line_bytes:
                    stats.long_lines += 1
                    skipping = True
                    continue
                stats.torn_lines += 1  # the final line was never finished
                return
            yield raw[:-1]


def read_capture(
    paths: str | Path | Iterable[str | Path],
    *,
    stats: CaptureStats | None = None,
    max_line_bytes: int = 64 * 1024 * 1024,
) -> Iterator[CaptureRecord]:
    """Stream ``(kind, url, ts, payload)`` records from captures (ours or cryptofeed's),
    plain or gzip, a line at a time. A directory means the files in it, sorted."""
    stats = stats if stats is not None else CaptureStats()
    for path in _expand(paths):
        url: str | None = None
        for raw in _lines(path, stats, max_line_bytes):
            try:
                record = parse_line(raw.decode("utf-8").rstrip("\r"), url)
            except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError):
                stats.bad_lines += 1
                continue
            if record is None:
                continue
            if record.kind == "connect":
                url = record.url
            stats.records += 1
            yield record


# -- writing ----------------------------------------------------------------------------


@dataclass
class _Segment:
    path: Path
    raw: IO[bytes]
    gz: gzip.GzipFile
    opened_at: float
    index: int
    started: str
    bytes_written: int = 0


class Recorder:
    """Writes capture lines per stream (one stream per connection) on a writer thread."""

    def __init__(
        self,
        directory: str | Path,
        *,
        max_file_bytes: int = 256 * 1024 * 1024,
        max_file_age_s: float = 3600.0,
        flush_interval_s: float = 1.0,
        max_pending: int = 10_000,
        compresslevel: int = 6,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_file_bytes = max_file_bytes
        self.max_file_age_s = max_file_age_s
        self.flush_interval_s = flush_interval_s
        self.compresslevel = compresslevel
        self.dropped = 0
        self.lines_written = 0
        self.files_opened = 0
        self.write_errors = 0
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(max_pending)
        self._segments: dict[str, _Segment] = {}  # writer thread only
        self._connect_lines: dict[str, bytes] = {}  # writer thread only
        self._unrecorded: set[str] = set()  # producer side: connections whose connect was dropped
        self._unended: set[str] = set()  # producer side: closes the full queue did not take
        self._closed = False
        self._last_error_log = 0.0
        self._thread = threading.Thread(target=self._run, name="ingest-recorder", daemon=True)
        self._thread.start()

    def stats(self) -> dict[str, int]:
        """For /metrics (counters read from the writer thread: a moment's lag is fine)."""
        return {"lines_written": self.lines_written, "dropped": self.dropped,
                "write_errors": self.write_errors, "files_opened": self.files_opened}

    # -- producer side (event loop): enqueue only ---------------------------------------

    def connected(self, stream: str, url: str, ts: float) -> None:
        if not self._put(("line", stream, "connect", url, ts, None)):
            # Without its connect line a file's frames belong to no exchange and a replay
            # refuses it: this connection's frames are dropped (and counted) instead.
            self._unrecorded.add(stream)

    def sent(self, stream: str, url: str, ts: float, payload: Payload) -> None:
        if stream in self._unrecorded:
            self.dropped += 1
            return
        self._put(("line", stream, "sent", url, ts, payload))

    def received(self, stream: str, ts: float, payload: Payload) -> None:
        if stream in self._unrecorded:
            self.dropped += 1
            return
        self._put(("line", stream, "recv", None, ts, payload))

    def rest(self, stream: str, url: str, ts: float, body: Payload) -> None:
        self._put(("line", stream, "rest", url, ts, body))

    def configuration(self, stream: str, config: Mapping[str, Any]) -> None:
        self._put(("line", stream, "config", None, None, json.dumps(config, separators=(",", ":"))))

    def end(self, stream: str) -> None:
        """The connection is gone: close its file. When the queue is full, the close is
        kept and sent before the next line that fits (else the file stayed open to the
        end of the run)."""
        self._unrecorded.discard(stream)
        if not self._put(("end", stream), counted=False):
            self._unended.add(stream)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Block until everything enqueued so far is written and flushed (tests, shutdown)."""
        done = threading.Event()
        self._put(("flush", done), block_s=timeout_s)
        return done.wait(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            _log.error("recorder.close_timeout", pending=self._queue.qsize())
            return
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            _log.error("recorder.close_timeout", pending=self._queue.qsize())

    def _put(self, op: tuple[Any, ...], block_s: float = 0.0, *, counted: bool = True) -> bool:
        """Enqueue ``op``; False (and, for a line, counted as dropped) when it does not fit."""
        if self._closed:
            self.dropped += counted
            return False
        while self._unended:  # closes that did not fit earlier go first
            stream = next(iter(self._unended))
            try:
                self._queue.put_nowait(("end", stream))
            except queue.Full:
                break
            self._unended.discard(stream)
        try:
            if block_s:
                self._queue.put(op, timeout=block_s)
            else:
                self._queue.put_nowait(op)
        except queue.Full:
            if not counted:
                return False
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                _log.warning("recorder.dropped", dropped=self.dropped)
            return False
        return True

    # -- writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            try:
                op = self._queue.get(timeout=self.flush_interval_s)
            except queue.Empty:
                op = ("tick",)
            if op is None:
                break
            try:
                self._apply(op)
            except Exception as exc:  # the thread must outlive any one line
                self._write_failed(op, exc)
            if time.monotonic() - last_flush >= self.flush_interval_s:
                self._flush_all()
                last_flush = time.monotonic()
        for stream in list(self._segments):
            self._close_segment(stream)

    def _apply(self, op: tuple[Any, ...]) -> None:
        if op[0] == "line":
            _, stream, kind, url, ts, payload = op
            line = (format_line(kind, url, ts, payload) + "\n").encode("utf-8")
            if kind == "connect":
                self._connect_lines[stream] = line
            self._write(stream, line, repeat_connect=kind != "connect")
        elif op[0] == "end":
            self._close_segment(op[1])
            self._connect_lines.pop(op[1], None)
        elif op[0] == "flush":
            self._flush_all()
            op[1].set()

    def _write(self, stream: str, line: bytes, *, repeat_connect: bool) -> None:
        seg = self._segments.get(stream)
        if seg is not None and (seg.bytes_written >= self.max_file_bytes
                                or time.monotonic() - seg.opened_at >= self.max_file_age_s):
            self._close_segment(stream)
            seg = self._open_segment(stream, seg.index + 1, seg.started)
            connect = self._connect_lines.get(stream)
            if connect is not None and repeat_connect:
                self._emit(seg, connect)
        if seg is None:
            started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            seg = self._open_segment(stream, 0, started)
            connect = self._connect_lines.get(stream)
            if connect is not None and repeat_connect:
                # A fresh file after a failed write: it opens with its connection's URL,
                # or a replay could not tell whose frames follow.
                self._emit(seg, connect)
        self._emit(seg, line)

    def _emit(self, seg: _Segment, line: bytes) -> None:
        seg.gz.write(line)
        seg.bytes_written += len(line)
        self.lines_written += 1

    def _open_segment(self, stream: str, index: int, started: str) -> _Segment:
        name = _UNSAFE_NAME.sub("_", stream)
        while True:
            path = self.directory / f"{name}.{started}.{index}.gz"
            try:
                raw = path.open("xb")  # never clobber an earlier capture
                break
            except FileExistsError:
                index += 1
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=self.compresslevel)
        seg = _Segment(path, raw, gz, time.monotonic(), index, started)
        self._segments[stream] = seg
        self.files_opened += 1
        return seg

    def _close_segment(self, stream: str) -> None:
        seg = self._segments.pop(stream, None)
        if seg is None:
            return
        try:
            seg.gz.close()
        finally:
            seg.raw.close()

    def _flush_all(self) -> None:
        for seg in self._segments.values():
            try:
                seg.gz.flush()  # a sync flush: everything so far is decodable after a crash
            except OSError as exc:
                self._write_failed(("flush",), exc)

    def _write_failed(self, op: tuple[Any, ...], exc: Exception) -> None:
        self.write_errors += 1
        now = time.monotonic()
        if now - self._last_error_log >= 60.0:  # a full disk fails every line: log sparingly
            self._last_error_log = now
            _log.error("recorder.write_failed", error=f"{type(exc).__name__}: {exc}"[:200],
                       errors=self.write_errors)
        if op[0] == "line":
            # Start a fresh file next time rather than keep writing into a broken one.
            try:
                self._close_segment(op[1])
            except OSError:
                self._segments.pop(op[1], None)
