"""Fixtures for the metrics tests: a scripted local API, a real database with the schema,
the writer, a recording sleep, and captured log output."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import structlog

from ingest import logs
from ingest.settings import MetricsSettings, WriterSettings
from ingest.sink import Sink
from tests.metrics.fakeapi import FakeApi

SCHEMA = Path(__file__).resolve().parents[2] / "schema" / "0001_market_data.up.sql"


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    fake = FakeApi()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def msettings(api: FakeApi) -> MetricsSettings:
    return MetricsSettings(**api.settings_kwargs(), http_timeout_s=2.0, jitter_s=0.0)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


class Sleeps:
    """An injected sleep: records what it was asked to wait, waits for nothing."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(SCHEMA.read_text())
    finally:
        await conn.close()
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def sink(pool: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[Sink]:
    """The real writer (the one every table goes through)."""
    s = Sink(pool, WriterSettings(spool_dir=str(tmp_path / "spool"), flush_interval_ms=20))
    await s.start()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def log_output() -> Iterator[Callable[[], str]]:
    """Everything logged (structlog and stdlib), rendered as the service renders it."""
    buf = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    logs.configure(level="DEBUG", fmt="json", stream=buf)
    try:
        yield buf.getvalue
    finally:
        structlog.reset_defaults()
        root.handlers[:], root.level = saved[0], saved[1]
