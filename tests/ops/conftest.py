"""Fixtures for the operations tests: a PostgreSQL of their own (to stop and restart),
migrated databases, writer settings in a temporary directory, HTTP helpers."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from ingest.db import migrate
from ingest.db.embedded import EmbeddedPostgres
from ingest.settings import Settings, WriterSettings, parse_settings


def writer_settings(tmp_path: Path, **changes: Any) -> WriterSettings:
    base: dict[str, Any] = {
        "max_batch_rows": 500, "flush_interval_ms": 20, "memory_limit_mb": 16,
        "spool_dir": str(tmp_path / "spool"), "spool_max_mb": 64, "shutdown_budget_s": 3.0,
        "db_timeout_s": 5.0, "retry_max_s": 0.2, "stats_interval_s": 3600,
    }
    base.update(changes)
    return WriterSettings(**base)


def settings_for(url: str, tmp_path: Path, **sections: Any) -> Settings:
    data: dict[str, Any] = {"database": {"url": url, "sslmode": "disable"},
                            "writer": {"spool_dir": str(tmp_path / "spool")}, **sections}
    return parse_settings(data, "<ops test>")


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


async def wait_for(predicate: Callable[[], Any], timeout_s: float = 20.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def own_pg() -> Iterator[EmbeddedPostgres]:
    """A cluster these tests may stop and start (the session one is shared)."""
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("needs a local PostgreSQL it can stop and restart")
    tmp = Path(tempfile.mkdtemp(prefix="ingest-ops-pg-"))
    os.chmod(tmp, 0o755)  # as root the server runs as another user, who must reach it
    server = EmbeddedPostgres(data_dir=tmp)
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    """A fresh database of the shared cluster with every migration applied."""
    conn = await asyncpg.connect(database_url)
    try:
        await migrate.upgrade(conn)
    finally:
        await conn.close()
    return database_url


@pytest.fixture
async def pool(migrated_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(migrated_url, min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


async def fresh_database(admin_dsn: str) -> str:
    name = f"ops_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')  # generated name, not input
    finally:
        await conn.close()
    return admin_dsn.rsplit("/", 1)[0] + f"/{name}"
