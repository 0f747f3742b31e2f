"""Which database to use: the configured one, or a private embedded cluster.

With no database URL configured (no ``database.url``, ``DATABASE_URL`` or ``DB_*``), the
``db`` commands and ``ingest run`` start a PostgreSQL cluster of their own under
``database.embedded_dir`` (initialised on first use, with a generated password kept beside
it), use its ``ingest`` database, and stop it on exit. A cluster that another ``ingest``
process already runs on that directory is used as it is and left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from ingest.db.embedded import EmbeddedPostgres, embedded_for_run
from ingest.errors import ConfigError, DatabaseError
from ingest.logs import get_logger, register_secret
from ingest.settings import Settings

log = get_logger("ingest.db.local")

EMBEDDED_DATABASE = "ingest"
_DATABASE_EXISTS = "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)"
_CREATE_DATABASE = "CREATE DATABASE ingest"  # constant: the name is EMBEDDED_DATABASE


async def _ensure_database(server: EmbeddedPostgres) -> None:
    try:
        conn = await asyncpg.connect(server.dsn("postgres"), ssl=False, timeout=30)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"embedded PostgreSQL on port {server.port} refused us: {exc}") from exc
    try:
        async with asyncio.timeout(60):
            if not await conn.fetchval(_DATABASE_EXISTS, EMBEDDED_DATABASE):
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # a racing process
                    await conn.execute(_CREATE_DATABASE)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def database_settings(settings: Settings) -> AsyncIterator[Settings]:
    """``settings`` with a database URL: the configured one unchanged, or the embedded
    cluster's, started here (and stopped when the block exits) if it is not running."""
    if settings.database.url:
        yield settings
        return
    base_dir = Path(settings.database.embedded_dir)
    try:
        server = await asyncio.to_thread(embedded_for_run, base_dir)
        register_secret(server.password or "")
        started = server.running_port() is None
        if started:
            await asyncio.to_thread(server.start)
    except OSError as exc:
        raise ConfigError(f"{settings.source}: database.embedded_dir: cannot use {str(base_dir)!r}: "
                          f"{exc.strerror or exc}") from None
    log.info("using the embedded PostgreSQL (no database URL configured)",
             data_dir=str(server.pgdata.resolve()), port=server.port,
             database=EMBEDDED_DATABASE, started_here=started)
    try:
        await _ensure_database(server)
        # Loopback only and without TLS: a configured sslmode is meant for a real server.
        db = dataclasses.replace(settings.database, url=server.dsn(EMBEDDED_DATABASE),
                                 sslmode="disable")
        yield dataclasses.replace(settings, database=db)
    finally:
        if started:
            others = await _other_sessions(server)
            if others:
                # Another ingest process attached to the cluster this one started: stopping
                # it would pull the database from under that process.
                log.info("embedded PostgreSQL left running: other processes use it",
                         data_dir=str(server.pgdata.resolve()), sessions=others)
            else:
                await asyncio.to_thread(server.stop)
                log.info("embedded PostgreSQL stopped", data_dir=str(server.pgdata.resolve()))


async def _other_sessions(server: EmbeddedPostgres) -> int:
    """Client sessions on the cluster other than the one asking (0 if it cannot ask)."""
    try:
        conn = await asyncpg.connect(server.dsn("postgres"), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return 0
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND pid <> pg_backend_pid()"))
    except asyncpg.PostgresError:
        return 0
    finally:
        await conn.close()
