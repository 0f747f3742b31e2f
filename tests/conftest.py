"""Test harness: a real PostgreSQL for every test that asks for one.

``TEST_DATABASE_URL`` (an admin DSN) when set; otherwise a throwaway cluster started for
the session with initdb/pg_ctl and removed afterwards. Each test gets a fresh database.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from ingest.db.embedded import EmbeddedPostgres

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLES = SHARED / "samples"


def _with_db(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    tmp = Path(tempfile.mkdtemp(prefix="ingest-test-pg-"))
    os.chmod(tmp, 0o755)
    server = EmbeddedPostgres(data_dir=tmp, durable=False)
    server.start()
    try:
        yield server.dsn("postgres")
    finally:
        server.stop("immediate")
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(pg_admin_dsn: str) -> Iterator[EmbeddedPostgres | None]:
    """Tests that stop/start the server need the embedded one; they skip under TEST_DATABASE_URL."""
    yield None


@pytest.fixture
async def database_url(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')  # name is generated above, not input
    finally:
        await conn.close()
    try:
        yield _with_db(pg_admin_dsn, name)
    finally:
        conn = await asyncpg.connect(pg_admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
