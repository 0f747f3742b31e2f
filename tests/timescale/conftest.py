"""The TimescaleDB lane: a WASM build of PostgreSQL 17 + TimescaleDB 2.23 (PGlite) served on
loopback by ``server.mjs``, one server for the whole session.

The server is a single backend: it takes one connection at a time (others queue), keeps
session state (prepared statements, advisory locks) across connections, and crashes on
COPY and pipelined ``executemany``. It also never closes a socket after the client's
Terminate message, so asyncpg's ``close()`` would wait forever: ``disconnect`` aborts the
socket instead. So: connections one after another, each with ``statement_cache_size=0``,
simple statements only.

Skipped (with the reason printed by ``-ra``) only when node is missing, or node_modules
is absent and ``npm ci`` cannot install it.
"""

from __future__ import annotations

import contextlib
import selectors
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from ingest.db.embedded import free_port

HERE = Path(__file__).resolve().parent
READY_TIMEOUT_S = 90.0


def _ensure_node_modules() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("TimescaleDB lane: node is not installed (needs Node.js 20+)")
    if (HERE / "node_modules" / "@unni-craftsman" / "pglite").is_dir():
        return node
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("TimescaleDB lane: tests/timescale/node_modules is absent and npm is missing")
    proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        pytest.skip(f"TimescaleDB lane: `npm ci` in tests/timescale failed: {tail}")
    return node


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    end = time.monotonic() + READY_TIMEOUT_S
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < end:
            if sel.select(timeout=1.0):
                line = proc.stdout.readline()
                if line.startswith("READY"):
                    return
                if not line and proc.poll() is not None:
                    break
    proc.kill()
    _, err = proc.communicate(timeout=10)
    raise RuntimeError(f"the TimescaleDB test server did not start: {err.strip()[-2000:]}")


@pytest.fixture(scope="session")
def timescale_dsn() -> Iterator[str]:
    node = _ensure_node_modules()
    port = free_port()
    # stdin is a pipe the server watches: if this process dies, the server exits too.
    proc = subprocess.Popen([node, "server.mjs", "--port", str(port)], cwd=HERE,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_ready(proc)
        # Any password works; the server speaks no TLS, so sslmode must be disable.
        yield f"postgresql://postgres:unused@127.0.0.1:{port}/postgres?sslmode=disable"
    finally:
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, ssl=False, statement_cache_size=0, timeout=30)


def disconnect(conn: asyncpg.Connection) -> None:
    conn.terminate()


@pytest.fixture
async def ts_conn(timescale_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection (the server's only one) for a test."""
    conn = await connect(timescale_dsn)
    try:
        yield conn
    finally:
        disconnect(conn)
