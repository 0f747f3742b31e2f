"""`ingest metrics --once` end to end: a real process, the local API, a real database."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
import orjson
import pytest

from ingest.errors import ExchangeError
from ingest.metrics.cmd import report
from ingest.metrics.service import RunResult
from tests.metrics.fakeapi import CG_PATH, FNG_PATH, HISTORY_DAYS, FakeApi, Reply

REPO = Path(__file__).resolve().parents[2]
KEY = "CG-cli-SECRET-99aa88bb77cc"


def write_config(tmp_path: Path, api: FakeApi) -> Path:
    kw = api.settings_kwargs()
    path = tmp_path / "ingest.toml"
    path.write_text(
        "[metrics]\n"
        f"coingecko_url = \"{kw['coingecko_url']}\"\n"
        f"fear_greed_url = \"{kw['fear_greed_url']}\"\n"
        "http_timeout_s = 5.0\n"
        "[writer]\n"
        f"spool_dir = \"{tmp_path / 'spool'}\"\n"
    )
    return path


async def ingest(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingest.cli", *args, cwd=REPO,
        env={**os.environ, "INGEST_CONFIG": "", **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM market_metrics"))
    finally:
        await conn.close()


async def test_once_table_then_again(api: FakeApi, database_url: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, api)
    args = ("metrics", "--once", "--config", str(cfg), "--database-url", database_url,
            "--log-level", "WARNING")
    rc, out, err = await ingest(*args)
    assert rc == 0, err
    assert "btc_dominance" in out and "47.82057011844006" in out
    assert "other/eth_dominance" in out
    assert f"history loaded: {HISTORY_DAYS} days" in out
    assert "fear_greed_index (Neutral)" in out
    assert f"market_metrics: {7 + HISTORY_DAYS} rows written, 0 already stored" in out
    assert await count(database_url) == 7 + HISTORY_DAYS

    rc, out, err = await ingest(*args)
    assert rc == 0, err
    assert "history loaded" not in out
    assert "market_metrics: 0 rows written, 8 already stored" in out
    assert await count(database_url) == 7 + HISTORY_DAYS
    assert [s.query["limit"] for s in api.requests(FNG_PATH)] == ["0", "1"]


async def test_once_json_and_key_never_printed(api: FakeApi, database_url: str,
                                               tmp_path: Path) -> None:
    cfg = write_config(tmp_path, api)
    api.queue(CG_PATH, Reply(500, b"echo ", "text/plain", echo_headers=True))
    rc, out, err = await ingest("metrics", "--once", "--format", "json", "--no-history",
                                "--config", str(cfg), "--database-url", database_url,
                                "--log-level", "DEBUG", "--log-format", "json",
                                env={"COINGECKO_API_KEY": KEY})
    assert rc == 0, err
    assert KEY not in out and KEY not in err
    rows = [orjson.loads(line) for line in out.splitlines()
            if line.startswith("{") and '"metric_type"' in line]
    assert {(r["metric_type"], r["name"]) for r in rows} >= {
        ("btc_dominance", ""), ("total_market_cap", ""), ("fear_greed_index", "")}
    assert len(rows) == 8  # --no-history: only the newest day
    cap = [r["value"] for r in rows if r["metric_type"] == "total_market_cap"]
    assert cap == ["2721226850772.63"]
    assert all(s.headers.get("x-cg-demo-api-key") == KEY for s in api.requests(CG_PATH))


async def test_once_every_source_failed(api: FakeApi, database_url: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, api)
    api.queue(CG_PATH, Reply(404, b'{"error": "gone"}'))
    api.queue(FNG_PATH, Reply(200, b"<html>maintenance</html>", "text/html"))
    rc, _, err = await ingest("metrics", "--once", "--config", str(cfg),
                              "--database-url", database_url, "--log-level", "ERROR")
    assert rc == 1
    [line] = err.strip().splitlines()
    assert line.startswith("ingest metrics: error: every metrics source failed:")
    assert "coingecko: http_4xx" in line and "fear_greed: html_page" in line
    assert "Traceback" not in err


def test_report_partial_failure_still_succeeds() -> None:
    ok = RunResult("fear_greed", True, [])
    bad = RunResult("coingecko", False, reason="timeout", detail="no complete answer")
    lines = report([bad, ok], "table", {"market_metrics": {"rows_written": 0,
                                                          "duplicates_skipped": 0}})
    assert any("coingecko   FAILED timeout" in line for line in lines)
    with pytest.raises(ExchangeError, match="every metrics source failed"):
        report([bad], "table", {})


async def test_history_still_loads_after_a_first_run_without_it(
        api: FakeApi, database_url: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, api)
    args = ("metrics", "--once", "--config", str(cfg), "--database-url", database_url,
            "--log-level", "WARNING")
    rc, out, err = await ingest(*args, "--no-history")
    assert rc == 0, err
    assert "history loaded" not in out
    rc, out, err = await ingest(*args)  # one recent index row stored: not the history
    assert rc == 0, err
    assert f"history loaded: {HISTORY_DAYS} days" in out
    assert await count(database_url) == 7 + HISTORY_DAYS
    assert [s.query["limit"] for s in api.requests(FNG_PATH)] == ["1", "0"]
