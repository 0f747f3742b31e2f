"""Rows the database refused on their own, kept for a human: JSON lines beside the spool.

Each line is ``{"table", "reason", "quarantined_at", "record"}``. The file is capped; past the
cap rows are still logged and counted, just not kept.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

MAX_BYTES = 64 << 20


class Quarantine:
    def __init__(self, path: Path, log: Any, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self._log = log
        self._max_bytes = max_bytes
        self._full_logged = False
        self._encoder = msgspec.json.Encoder()

    def write(self, table: str, rows: list[tuple[Any, str]]) -> None:
        now = datetime.now(UTC).isoformat()
        lines = []
        for record, reason in rows:
            entry = {"table": table, "reason": reason, "quarantined_at": now, "record": record}
            try:
                lines.append(self._encoder.encode(entry) + b"\n")
            except (TypeError, ValueError, OverflowError):  # an unencodable record: keep its repr
                entry["record"] = repr(record)
                lines.append(self._encoder.encode(entry) + b"\n")
        data = b"".join(lines)
        try:
            size = self.path.stat().st_size if self.path.exists() else 0
            if size + len(data) > self._max_bytes:
                if not self._full_logged:
                    self._log.error("quarantine file full; further rows are only logged",
                                    file=str(self.path), max_bytes=self._max_bytes)
                    self._full_logged = True
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as fh:
                fh.write(data)
        except OSError as exc:
            with contextlib.suppress(Exception):
                self._log.error("cannot write quarantine file", file=str(self.path), error=str(exc))
