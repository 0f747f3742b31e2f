"""/healthz, /readyz and /metrics against a real PostgreSQL (stopped and restarted)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingest.db import migrate
from ingest.db.embedded import EmbeddedPostgres
from ingest.health import HealthServer, stream_readiness
from ingest.observe import Observer, Snapshot
from ingest.records import Trade
from ingest.sink import Sink
from tests.ops.conftest import fresh_database, get, settings_for, wait_for, writer_settings


@pytest.fixture
async def server_factory(tmp_path: Path) -> AsyncIterator[Any]:
    servers: list[HealthServer] = []

    async def make(url: str = "postgresql://x@127.0.0.1:1/x", **kwargs: Any) -> HealthServer:
        settings = settings_for(url, tmp_path, health={"host": "127.0.0.1"})
        server = HealthServer(settings, port=0, **kwargs)
        await server.start()
        servers.append(server)
        return server

    yield make
    for s in servers:
        await s.stop()


def url(server: HealthServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def trades(n: int, first_id: int = 1) -> list[Trade]:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    return [Trade("binance", "BTCUSDT", first_id + i, t0 + timedelta(milliseconds=i), "60000.5",
                  "0.001", None, i % 2 == 0) for i in range(n)]


async def test_healthz_answers_without_a_database(server_factory: Any) -> None:
    server = await server_factory(pool=None)
    status, body = await get(url(server, "/healthz"))
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, body = await get(url(server, "/readyz"))
    assert status == 503
    assert json.loads(body)["checks"]["database"] == {"ok": False, "error": "not connected yet"}


async def test_readyz_follows_the_database_down_and_back(own_pg: EmbeddedPostgres,
                                                         server_factory: Any) -> None:
    dsn = await fresh_database(own_pg.dsn("postgres"))
    conn = await asyncpg.connect(dsn)
    await migrate.upgrade(conn)
    await conn.close()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        server = await server_factory(dsn, pool=pool)
        status, body = await get(url(server, "/readyz"))
        assert status == 200, body
        assert json.loads(body)["status"] == "ready"

        await asyncio.to_thread(own_pg.stop, "immediate")
        status, body = await get(url(server, "/readyz"))
        doc = json.loads(body)
        assert status == 503
        assert doc["failing"] == ["database", "schema"]
        assert doc["checks"]["database"]["ok"] is False and doc["checks"]["database"]["error"]
        assert (await get(url(server, "/healthz")))[0] == 200  # liveness is not readiness

        await asyncio.to_thread(own_pg.start)

        async def ready() -> bool:
            return (await get(url(server, "/readyz")))[0] == 200

        await wait_for(ready, 30, "ready again after the restart")
    finally:
        if own_pg.running_port() is None:
            await asyncio.to_thread(own_pg.start)
        await pool.close()


async def test_readyz_names_pending_migrations(database_url: str, server_factory: Any) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        server = await server_factory(database_url, pool=pool)
        status, body = await get(url(server, "/readyz"))
        doc = json.loads(body)
        assert status == 503 and doc["failing"] == ["schema"]
        assert any(p.startswith("0001_market_data pending") for p in
                   doc["checks"]["schema"]["problems"])
        await migrate.upgrade(pool)
        assert (await get(url(server, "/readyz")))[0] == 200
    finally:
        await pool.close()


def _snap(state: str, connected: bool, last_ts: float | None, now: float) -> Snapshot:
    health = {"exchange": "binance", "streams": {"trade:BTCUSDT": {
        "connection": "stream0", "state": state, "connected": connected,
        "last_message_age_s": None}}}
    stats = {"connections": {"binance.stream0": {"last_message_ts": last_ts,
                                                 "last_connect_ts": None}}}
    return Snapshot(at=0.0, wall=now, connectors={"binance": stats},
                    health={"binance": health}, stale_after_s={"binance": 30.0})


def test_stream_readiness_allows_a_reconnect_within_its_budget() -> None:
    now = 10_000.0
    assert stream_readiness(_snap("connected", True, now - 500, now), 0.0)["ok"] is True
    within = stream_readiness(_snap("reconnecting", False, now - 10, now), 0.0)
    assert within["ok"] is True and within["reconnecting"] == [
        "binance trade:BTCUSDT (reconnecting, 10 s)"]
    late = stream_readiness(_snap("reconnecting", False, now - 31, now), 0.0)
    assert late["ok"] is False and late["not_connected"] == [
        "binance trade:BTCUSDT (reconnecting, 31 s)"]
    # Never connected since start: the budget counts from the process start.
    assert stream_readiness(_snap("connecting", False, None, now), now - 5)["ok"] is True
    assert stream_readiness(_snap("connecting", False, None, now), now - 40)["ok"] is False


async def test_metrics_counters_move_with_writes(pool: asyncpg.Pool, migrated_url: str,
                                                 tmp_path: Path, server_factory: Any) -> None:
    sink = Sink(pool, writer_settings(tmp_path))
    await sink.start()
    try:
        server = await server_factory(migrated_url, pool=pool, sink=sink)
        status, text = await get(url(server, "/metrics"))
        assert status == 200
        before = samples(text)
        assert before[("ingest_up", ())] == 1.0
        assert before[("ingest_rows_written_total", (("table", "trades"),))] == 0.0

        await sink.put_many(trades(120))
        await sink.flush()
        await sink.put_many(trades(120))  # the same rows again: duplicates, not new rows
        await sink.flush()
        after = samples((await get(url(server, "/metrics")))[1])
        t = (("table", "trades"),)
        assert after[("ingest_rows_written_total", t)] == 120.0
        assert after[("ingest_rows_duplicate_total", t)] == 120.0
        assert after[("ingest_rows_dropped_total", t)] == 0.0
        assert after[("ingest_queue_rows", t)] == 0.0
        assert after[("ingest_spool_bytes", t)] == 0.0
        assert after[("ingest_writer_healthy", t)] == 1.0
        batches = after[("ingest_write_batches_total", t)]
        assert batches >= 2
        assert after[("ingest_flush_seconds_count", t)] == batches
        assert after[("ingest_flush_seconds_bucket", (("le", "+Inf"), ("table", "trades")))] == batches
        assert after[("ingest_flush_seconds_sum", t)] > 0
        assert ("process_resident_memory_bytes", ()) in after
    finally:
        await sink.close()


async def test_a_failing_component_is_left_out_not_fatal(server_factory: Any) -> None:
    class Broken:
        def stats(self) -> dict[str, Any]:
            raise RuntimeError("bug")

    observer = Observer()
    observer.set_sink(Broken())
    server = await server_factory(pool=None, observer=observer)
    status, text = await get(url(server, "/metrics"))
    assert status == 200 and samples(text)[("ingest_up", ())] == 1.0


async def test_a_recording_shows_its_written_and_dropped_lines(server_factory: Any,
                                                               tmp_path: Path) -> None:
    from ingest.transport.recorder import Recorder

    recorder = Recorder(tmp_path / "rec", max_pending=1)
    observer = Observer()
    server = await server_factory(pool=None, observer=observer)
    status, text = await get(url(server, "/metrics"))
    assert status == 200 and not any(k[0].startswith("ingest_recorder") for k in samples(text))
    observer.set_recorder(recorder)
    try:
        recorder.connected("binance.1", "wss://stream.binance.com:9443/ws", 1.0)
        for i in range(2_000):  # faster than the writer thread: some are dropped
            recorder.received("binance.1", 2.0 + i, "x")
        assert recorder.flush()
        status, text = await get(url(server, "/metrics"))
        values = samples(text)
        written = values[("ingest_recorder_lines_total", (("result", "written"),))]
        dropped = values[("ingest_recorder_lines_total", (("result", "dropped"),))]
        assert written == recorder.lines_written > 0 and dropped == recorder.dropped
        assert written + dropped == 2_001
        assert values[("ingest_recorder_write_errors_total", ())] == 0
    finally:
        recorder.close()


async def test_metrics_is_the_prometheus_text_format(server_factory: Any) -> None:
    server = await server_factory(pool=None)
    async with aiohttp.ClientSession() as http, http.get(url(server, "/metrics")) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        names = {f.name for f in text_string_to_metric_families(await resp.text())}
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
    async with aiohttp.ClientSession() as http, http.get(url(server, "/metrics"),
                                                         headers=headers) as resp:
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await resp.text()).endswith("# EOF\n")
    for name in ("ingest_up", "ingest_rows_written", "ingest_frames_received",
                 "ingest_ws_reconnects", "ingest_book_gaps", "ingest_book_resyncs",
                 "ingest_stream_last_message_age_seconds", "ingest_flush_seconds",
                 "ingest_metric_job_runs", "ingest_backfill_jobs_running", "ingest_queue_rows",
                 "ingest_spool_bytes"):
        assert name in names, name
