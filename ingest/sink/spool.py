"""The on-disk spool: whole batches the database could not take, replayed in order later.

Layout: ``<spool_dir>/<seq:016d>.<table>.seg`` append-only segment files, ``seq`` increasing
across tables and restarts. Each batch is one frame::

    magic "ISP1" | body_len u32 | crc32 u32 | rows u32 | first_ts_us i64 | last_ts_us i64 | body

little-endian; ``crc32`` covers rows, the time range and the body; the body is the records
as a msgpack array (msgspec). A frame is written with one ``write`` call; a process killed
mid-write leaves a torn final frame, which the next start detects (short read or checksum),
counts and skips. Frames survive a killed process (the page cache is the kernel's); they are
fsynced at close, so a power loss can cost the last unsynced frames, again detected.

Replay hands out frames per table in order; a segment is deleted once every frame in it is
written. A crash during replay replays the segment again: the writer's idempotent keys
absorb it. The cap (``spool_max_mb``) drops whole segments: order-book segments first, then
the oldest segment of any table; every drop logs an ERROR with exact rows and time range.
A lock file keeps a second process off the same spool.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from ingest.errors import WriteError

MAGIC = b"ISP1"
HEADER = struct.Struct("<4sIIIqq")
_META = struct.Struct("<Iqq")
_NAME = re.compile(r"^(\d{16})\.([a-z_]+)\.seg$")
BOOKS_TABLE = "order_books"  # dropped first when the spool is full


@dataclass(slots=True)
class Frame:
    offset: int
    body_len: int
    rows: int
    first_us: int
    last_us: int


@dataclass(eq=False, slots=True)
class Segment:
    table: str
    seq: int
    path: Path
    frames: list[Frame] = field(default_factory=list)
    size: int = 0
    next_read: int = 0  # frames handed out for replay
    done: int = 0  # frames written (acked) or skipped
    fd: int | None = None  # open for appending while this is the table's active segment
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class FrameRef:
    segment: Segment
    index: int
    rows: int


def _ts_us(ts: Any) -> int:
    try:
        return int(ts.timestamp() * 1_000_000)
    except (AttributeError, TypeError, ValueError, OverflowError):
        return 0


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat() if us else "?"


class Spool:
    def __init__(self, directory: Path, max_bytes: int, types: Mapping[str, type[Any]],
                 log: Any) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        # Space is freed a segment file at a time, so at the cap the oldest segment goes:
        # small segments (4 MiB at most, a few 5,000-row batches) keep that drop close to
        # "the oldest batch" without a file per batch.
        self.segment_max_bytes = max(256 << 10, min(4 << 20, max_bytes // 256))
        self._decoders = {t: msgspec.msgpack.Decoder(list[tp]) for t, tp in types.items()}  # type: ignore[valid-type]
        self._encoder = msgspec.msgpack.Encoder()
        self._log = log
        self._segments: dict[str, list[Segment]] = {t: [] for t in types}
        self._next_seq = 0
        self._lock_fd: int | None = None
        self.total_bytes = 0
        self.dropped_rows: dict[str, int] = dict.fromkeys(types, 0)
        self.torn_frames: dict[str, int] = dict.fromkeys(types, 0)

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the directory and index what a previous process left behind."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock_fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WriteError(f"spool {self.directory} is in use by another process") from None
        except OSError as exc:
            raise WriteError(f"cannot open spool {self.directory}: {exc.strerror}") from exc
        for path in sorted(self.directory.iterdir()):
            m = _NAME.match(path.name)
            if m is None:
                continue
            seq, table = int(m.group(1)), m.group(2)
            self._next_seq = max(self._next_seq, seq + 1)
            if table not in self._segments:
                self._log.warning("spool: ignoring segment of unknown table", file=str(path))
                continue
            self._index(Segment(table, seq, path))

    def _index(self, seg: Segment) -> None:
        data = seg.path.read_bytes()
        offset = 0
        while offset < len(data):
            if len(data) - offset < HEADER.size:
                self._torn(seg, offset, "short header")
                break
            magic, body_len, _crc, rows, first, last = HEADER.unpack_from(data, offset)
            if magic != MAGIC or offset + HEADER.size + body_len > len(data):
                self._torn(seg, offset, "bad magic" if magic != MAGIC else "short body")
                break
            seg.frames.append(Frame(offset, body_len, rows, first, last))
            offset += HEADER.size + body_len
        seg.size = len(data)
        if not seg.frames:
            seg.path.unlink(missing_ok=True)
            return
        self._segments[seg.table].append(seg)
        self.total_bytes += seg.size

    def _torn(self, seg: Segment, offset: int, why: str) -> None:
        self.torn_frames[seg.table] += 1
        self._log.warning("spool: torn frame skipped (a crash during a write)", table=seg.table,
                          file=seg.path.name, offset=offset, reason=why)

    def close(self) -> None:
        for segments in self._segments.values():
            for seg in segments:
                self._deactivate(seg, sync=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- state -----------------------------------------------------------------------------

    def has_frames(self, table: str) -> bool:
        return any(s.next_read < len(s.frames) for s in self._segments[table])

    def table_bytes(self, table: str) -> int:
        return sum(s.size for s in self._segments[table])

    def table_rows(self, table: str) -> int:
        """Rows on disk not yet handed out for replay."""
        return sum(f.rows for s in self._segments[table] for f in s.frames[s.next_read:])

    # -- writing ---------------------------------------------------------------------------

    def append(self, table: str, records: list[Any]) -> bool:
        """Spool one batch; False when it had to be dropped (logged and counted)."""
        rows = len(records)
        first = min((_ts_us(r.timestamp) for r in records), default=0)
        last = max((_ts_us(r.timestamp) for r in records), default=0)
        body = self._encoder.encode(records)
        crc = zlib.crc32(body, zlib.crc32(_META.pack(rows, first, last)))
        frame = HEADER.pack(MAGIC, len(body), crc, rows, first, last) + body
        if len(frame) > self.max_bytes:
            self._count_drop(table, rows, first, last, "the spool cap is smaller than this batch")
            return False
        while self.total_bytes + len(frame) > self.max_bytes and self._any_segment():
            self._drop_segment(self._victim())
        try:
            seg = self._active_segment(table, len(frame))
        except OSError as exc:  # directory gone, no permission, no inodes or descriptors
            self._count_drop(table, rows, first, last,
                             f"spool segment could not be created: {exc.strerror or exc}")
            return False
        assert seg.fd is not None
        try:
            written = 0
            while written < len(frame):
                written += os.write(seg.fd, frame[written:])
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(seg.fd, seg.size)  # leave no torn frame behind
            self._deactivate(seg, sync=False)
            self._count_drop(table, rows, first, last, f"spool write failed: {exc.strerror}")
            return False
        seg.frames.append(Frame(seg.size, len(body), rows, first, last))
        seg.size += len(frame)
        self.total_bytes += len(frame)
        return True

    def _active_segment(self, table: str, frame_len: int) -> Segment:
        segments = self._segments[table]
        seg = segments[-1] if segments and segments[-1].fd is not None else None
        if seg is not None and seg.size + frame_len <= self.segment_max_bytes:
            return seg
        if seg is not None:
            self._deactivate(seg, sync=False)
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        path = self.directory / f"{seq:016d}.{table}.seg"
        seg = Segment(table, seq, path)
        seg.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        segments.append(seg)
        return seg

    def _deactivate(self, seg: Segment, *, sync: bool) -> None:
        if seg.fd is None:
            return
        with contextlib.suppress(OSError):
            if sync:
                os.fsync(seg.fd)
            os.close(seg.fd)
        seg.fd = None

    def _any_segment(self) -> bool:
        return any(self._segments.values())

    def _victim(self) -> Segment:
        books = self._segments.get(BOOKS_TABLE, [])
        if books:
            return books[0]
        candidates = [s[0] for s in self._segments.values() if s]
        return min(candidates, key=lambda s: s.seq)

    def _drop_segment(self, seg: Segment) -> None:
        unread = seg.frames[seg.next_read:]
        rows = sum(f.rows for f in unread)
        first = min((f.first_us for f in unread), default=0)
        last = max((f.last_us for f in unread), default=0)
        self._remove(seg)
        if rows:
            why = f"spool full ({self.max_bytes} bytes): dropped segment {seg.path.name}"
            self._count_drop(seg.table, rows, first, last, why)

    def _count_drop(self, table: str, rows: int, first: int, last: int, why: str) -> None:
        self.dropped_rows[table] += rows
        self._log.error("spool: rows dropped", table=table, rows=rows, first_ts=_iso(first),
                        last_ts=_iso(last), reason=why)

    def _remove(self, seg: Segment) -> None:
        self._deactivate(seg, sync=False)
        with contextlib.suppress(OSError):
            seg.path.unlink()
        seg.deleted = True
        self._segments[seg.table].remove(seg)
        self.total_bytes -= seg.size

    # -- replay ----------------------------------------------------------------------------

    def read_next(self, table: str) -> tuple[FrameRef, list[Any]] | None:
        """The oldest frame of ``table`` not yet handed out, decoded; None when there is none."""
        for seg in list(self._segments[table]):
            while seg.next_read < len(seg.frames):
                index = seg.next_read
                seg.next_read += 1
                frame = seg.frames[index]
                ref = FrameRef(seg, index, frame.rows)
                records = self._read_frame(seg, frame)
                if records is not None:
                    return ref, records
                self.ack(ref)
        return None

    def _read_frame(self, seg: Segment, frame: Frame) -> list[Any] | None:
        try:
            with seg.path.open("rb") as fh:
                fh.seek(frame.offset)
                data = fh.read(HEADER.size + frame.body_len)
            _m, body_len, crc, rows, first, last = HEADER.unpack_from(data)
            body = data[HEADER.size:]
            expected = zlib.crc32(body, zlib.crc32(_META.pack(rows, first, last)))
            if len(body) != body_len or expected != crc:
                raise ValueError("checksum mismatch")
            records: list[Any] = self._decoders[seg.table].decode(body)
            return records
        except (OSError, ValueError, struct.error, msgspec.DecodeError) as exc:
            self.torn_frames[seg.table] += 1
            self.dropped_rows[seg.table] += frame.rows
            self._log.error("spool: corrupt frame skipped", table=seg.table, file=seg.path.name,
                            offset=frame.offset, rows=frame.rows, first_ts=_iso(frame.first_us),
                            last_ts=_iso(frame.last_us), error=str(exc)[:200])
            return None

    def ack(self, ref: FrameRef) -> None:
        """The frame is in the database: once a segment is fully written, delete it."""
        seg = ref.segment
        if seg.deleted:
            return
        seg.done += 1
        if seg.done >= len(seg.frames):
            self._remove(seg)
