"""``ingest run``: schema first, then components; SIGTERM drains and exits 0."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import selectors
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg
import pytest

from ingest import daemon
from ingest.db.embedded import free_port
from ingest.errors import ConfigError

from .conftest import cli_env, error_lines, run_cli, settings_for, spawn_cli


def _read_until(proc: subprocess.Popen[str], needle: str, timeout_s: float) -> list[str]:
    """stdout lines up to and including the first that contains ``needle``."""
    assert proc.stdout is not None
    lines: list[str] = []
    end = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < end:
            if not sel.select(timeout=max(0.0, end - time.monotonic())):
                continue
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if needle in line:
                return lines
    proc.kill()
    raise AssertionError(f"no {needle!r} within {timeout_s} s; got:\n{''.join(lines)}")


def test_run_bootstraps_then_stops_on_sigterm(database_url: str, tmp_path: Path) -> None:
    proc = spawn_cli("run", "--database-url", database_url, "--shard", "1/3",
                     "--health-port", "0", cwd=tmp_path)
    try:
        before = _read_until(proc, "ingest started", timeout_s=60)
        started_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert time.monotonic() - started_at < 8  # the container stop budget
    text = "".join(before)
    assert text.index("migration applied") < text.index("ingest started")
    assert "shard" in before[-1] and "1/3" in before[-1]
    assert "ingest stopped" in out


def test_sigterm_while_waiting_for_the_database(tmp_path: Path) -> None:
    url = f"postgresql://ingest@127.0.0.1:{free_port()}/ingest"
    proc = spawn_cli("run", "--database-url", url, "--health-port", "0", cwd=tmp_path)
    try:
        listening = _read_until(proc, "health server listening", timeout_s=30)[-1]
        port = json.loads(listening)["port"]
        _read_until(proc, "retrying", timeout_s=30)
        # Probes get answers while the database is unreachable: alive, not ready, and why.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.status == 200
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert not_ready.value.code == 503
        body = json.loads(not_ready.value.read())
        assert body["checks"]["database"] == {"ok": False, "error": "not connected yet"}
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert time.monotonic() - sent < 5


def test_bad_shard_is_a_config_error(tmp_path: Path) -> None:
    proc = run_cli("run", "--shard", "3/2", "--database-url", "postgresql://x@127.0.0.1:1/x",
                   cwd=tmp_path, env=cli_env())
    assert proc.returncode == 2
    lines = error_lines(proc)
    assert len(lines) == 1 and "--shard" in lines[0] and lines[0].count("--shard") == 1


def test_options_from_args_and_settings() -> None:
    settings = settings_for("postgresql://x@h/db")
    args = argparse.Namespace(simulate=True, record="/tmp/rec", health_port=9100, shard="2/4")
    assert daemon.options_from(args, settings) == daemon.RunOptions(
        simulate=True, record_dir="/tmp/rec", health_port=9100, shard=(2, 4))
    defaults = daemon.options_from(argparse.Namespace(), settings)
    assert defaults == daemon.RunOptions(health_port=settings.health.port, shard=(0, 1))
    with pytest.raises(ConfigError):
        daemon.options_from(argparse.Namespace(shard="1/1"), settings)


def test_a_record_dir_that_cannot_be_one_is_a_config_error(tmp_path: Path) -> None:
    settings = settings_for("postgresql://x@h/db")
    (tmp_path / "afile").write_text("")
    for bad in (tmp_path / "afile", tmp_path / "afile" / "below"):
        with pytest.raises(ConfigError, match=f"--record: cannot create the directory .*{bad.name}"):
            daemon.options_from(argparse.Namespace(record=str(bad)), settings)
    fresh = tmp_path / "new" / "rec"
    assert daemon.options_from(argparse.Namespace(record=str(fresh)), settings).record_dir == str(fresh)
    assert fresh.is_dir()
    in_config = dataclasses.replace(settings, service=dataclasses.replace(
        settings.service, record_dir=str(tmp_path / "afile")))
    with pytest.raises(ConfigError, match=r"service\.record_dir in"):
        daemon.options_from(argparse.Namespace(), in_config)


def test_run_with_a_bad_record_dir_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    proc = run_cli("run", "--record", str(tmp_path / "afile"), "--database-url",
                   "postgresql://x@127.0.0.1:1/x", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "--record: cannot create the directory" in proc.stderr


async def test_components_run_until_stop_and_drain(database_url: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    async def worker(service: daemon.Service) -> None:
        seen.append("started")
        await service.stop_event.wait()
        seen.append("flushed")

    async def stubborn() -> None:
        await asyncio.sleep(3600)

    def components(service: daemon.Service) -> None:
        assert service.bootstrap.migrations.applied  # the schema came first
        service.start("worker", worker(service))
        service.start("stubborn", stubborn())

    monkeypatch.setattr(daemon, "COMPONENTS", [daemon.start_retention, components])
    settings = settings_for(database_url)
    settings = dataclasses.replace(
        settings, writer=dataclasses.replace(settings.writer, shutdown_budget_s=0.5))
    stop = asyncio.Event()
    run = asyncio.create_task(daemon.run_service(settings, argparse.Namespace(), stop))
    while "started" not in seen:
        await asyncio.sleep(0.02)
    stop.set()
    assert await asyncio.wait_for(run, timeout=5) == 0
    assert seen == ["started", "flushed"]
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM ingest_schema_migrations") == 3
    finally:
        await conn.close()


async def test_a_crashing_component_stops_the_service(database_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken() -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("boom")

    monkeypatch.setattr(daemon, "COMPONENTS", [lambda s: s.start("broken", broken())])
    stop = asyncio.Event()
    code = await asyncio.wait_for(
        daemon.run_service(settings_for(database_url), argparse.Namespace(), stop), timeout=30)
    assert code == 1 and stop.is_set()


async def test_a_symbol_the_exchange_does_not_list_stops_the_service_with_exit_2(
    database_url: str, tmp_path: Path,
) -> None:
    from structlog.testing import capture_logs

    from ingest.settings import parse_settings
    from ingest.sim import start_simulator

    sim = await start_simulator("127.0.0.1", 0, seed=3, symbols=("BTC/USDT",))
    try:
        binance = {**sim.endpoints()["binance"], "symbols": ["BTC/USDT", "NOPE/USDT"],
                   "channels": ["trades"]}
        settings = parse_settings({
            "database": {"url": database_url},
            "writer": {"spool_dir": str(tmp_path / "spool")},
            "backfill": {"gap_repair": False}, "metrics": {"enabled": False},
            "exchanges": {"binance": binance, "gateio": {"enabled": False},
                          "huobi": {"enabled": False}},
        }, "<test>")
        with capture_logs() as logs:
            code = await asyncio.wait_for(daemon.run_service(
                settings, argparse.Namespace(health_port=0), asyncio.Event()), timeout=60)
    finally:
        await sim.stop()
    assert code == 2
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["configuration error; stopping the service"]
    assert "NOPE/USDT" in errors[0]["error"] and "binance" in errors[0]["error"]


async def test_a_recording_holds_the_rest_book_images_it_was_synced_from(
    database_url: str, tmp_path: Path,
) -> None:
    """``--record``: the REST depth snapshots the Binance books start from are recorded
    beside the frames, so a replay can sync the same books."""
    import gzip

    from ingest.settings import parse_settings
    from ingest.sim import start_simulator

    sim = await start_simulator("127.0.0.1", 0, seed=3, symbols=("BTC/USDT",))
    stop = asyncio.Event()
    try:
        binance = {**sim.endpoints()["binance"], "symbols": ["BTC/USDT"], "channels": ["book"]}
        settings = parse_settings({
            "database": {"url": database_url},
            "writer": {"spool_dir": str(tmp_path / "spool"), "flush_interval_ms": 50},
            "backfill": {"gap_repair": False}, "metrics": {"enabled": False},
            "exchanges": {"binance": binance, "gateio": {"enabled": False},
                          "huobi": {"enabled": False}},
        }, "<test>")
        args = argparse.Namespace(health_port=0, record=str(tmp_path / "rec"))
        run = asyncio.create_task(daemon.run_service(settings, args, stop))
        conn = await asyncpg.connect(database_url)
        try:
            for _ in range(600):  # the first stored snapshot: the REST image was fetched
                try:
                    if await conn.fetchval("SELECT count(*) FROM order_books"):
                        break
                except asyncpg.UndefinedTableError:
                    pass  # the service is still applying the schema
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("no book snapshot within 30 s")
        finally:
            await conn.close()
            stop.set()
            code = await asyncio.wait_for(run, timeout=30)
        assert code == 0
    finally:
        await sim.stop()
    rest = [p for p in (tmp_path / "rec").iterdir() if p.name.startswith("http.")]
    assert rest, sorted(p.name for p in (tmp_path / "rec").iterdir())
    text = b"".join(gzip.decompress(p.read_bytes()) for p in rest).decode()
    assert "/binance/api/v3/depth?symbol=BTCUSDT" in text and '"lastUpdateId"' in text
