"""Schema migrations: the ordered SQL files in schema/, a ledger table, an advisory lock.

Files are ``NNNN_name.up.sql`` with an optional ``NNNN_name.down.sql``, applied in numeric
order, each in its own transaction together with its ledger row, so a failed migration
leaves nothing half-applied. The whole upgrade holds ``pg_advisory_lock(LOCK_KEY)``: of
several processes starting together one applies, the others wait and then find nothing
pending.

A migration whose first line is ``-- ingest:requires timescaledb`` needs the extension.
On plain PostgreSQL it is recorded as *skipped* (one warning per upgrade) and applied by a
later upgrade once TimescaleDB is there (its SQL must cope with existing data, e.g.
``migrate_data => true``).

The ledger keeps the sha256 of each applied up file. An applied file that has since changed
is refused before anything is applied: the database no longer matches the file, and
silently carrying on would hide it. Change the schema with a new migration instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import asyncpg

from ingest.db.pool import deadline
from ingest.errors import MigrationError, UnknownMigration
from ingest.logs import get_logger

log = get_logger("ingest.db.migrate")

LEDGER = "ingest_schema_migrations"
# pg_advisory_lock key: the bytes "ingestmg" as a signed 64-bit integer. Constant, so every
# version of ingest serialises on the same lock.
LOCK_KEY = int.from_bytes(b"ingestmg", "big", signed=True)
REQUIRES_TIMESCALEDB = "-- ingest:requires timescaledb"
TimescaleMode = Literal["auto", "require", "off"]

QUICK_TIMEOUT_S = 60.0  # ledger reads and writes, the lock probe
MIGRATION_TIMEOUT_S = 6 * 3600.0  # one migration (migrate_data on a big table is slow)
LOCK_WAIT_S = 900.0  # how long to wait for another process's upgrade

_FILE_RE = re.compile(r"^(\d+)_([A-Za-z0-9_]+)\.up\.sql$")

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS ingest_schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,   -- sha256 of the up file
    applied_at timestamptz NOT NULL DEFAULT now(),
    skipped    boolean     NOT NULL DEFAULT false  -- needs TimescaleDB, which was absent
)"""
_LEDGER_EXISTS = "SELECT to_regclass('ingest_schema_migrations') IS NOT NULL"
_READ_LEDGER = ("SELECT version, name, checksum, applied_at, skipped "
                "FROM ingest_schema_migrations ORDER BY version")
_RECORD = """
INSERT INTO ingest_schema_migrations (version, name, checksum, applied_at, skipped)
VALUES ($1, $2, $3, now(), $4)
ON CONFLICT (version) DO UPDATE
SET name = EXCLUDED.name, checksum = EXCLUDED.checksum,
    applied_at = EXCLUDED.applied_at, skipped = EXCLUDED.skipped"""
_FORGET = "DELETE FROM ingest_schema_migrations WHERE version = $1"
_DROP_LEDGER = "DROP TABLE IF EXISTS ingest_schema_migrations"
_TS_AVAILABLE = "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
_TS_INSTALLED = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
_TS_HYPERTABLE = """
SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
               WHERE hypertable_name = 'candlesticks')"""


# ---------------------------------------------------------------------------------------------
# Files


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up_path: Path
    down_path: Path | None
    requires_timescaledb: bool
    checksum: str  # sha256 hex of the up file (line endings normalised)

    @property
    def label(self) -> str:
        return self.up_path.name.removesuffix(".up.sql")

    def up_sql(self) -> str:
        return self.up_path.read_text(encoding="utf-8")

    def down_sql(self) -> str:
        if self.down_path is None:
            raise MigrationError(f"migration {self.label} has no down step "
                                 f"({self.label}.down.sql is missing)")
        return self.down_path.read_text(encoding="utf-8")


def schema_dir(directory: str | Path | None = None) -> Path:
    """Where the migrations are: ``directory``, else ``INGEST_SCHEMA_DIR``, else the copy
    shipped in the package (``ingest/db/schema``), else the source tree's ``schema/``."""
    if directory:
        return Path(directory)
    if os.environ.get("INGEST_SCHEMA_DIR"):
        return Path(os.environ["INGEST_SCHEMA_DIR"])
    here = Path(__file__).resolve().parent
    for candidate in (Path(__file__).parent / "schema", here.parents[1] / "schema"):
        if candidate.is_dir() and any(candidate.glob("*.up.sql")):
            return candidate
    raise MigrationError("cannot find the schema migrations (schema/*.up.sql); "
                         "set INGEST_SCHEMA_DIR to the schema directory")


def checksum(path: Path) -> str:
    # Line endings are normalised so a checkout with CRLF does not look like an edit.
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def discover(directory: str | Path | None = None) -> list[Migration]:
    """The migrations in ``schema_dir(directory)``, ordered by version."""
    root = schema_dir(directory)
    if not root.is_dir():
        raise MigrationError(f"schema directory {str(root)!r} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(root.glob("*.up.sql")):
        m = _FILE_RE.match(path.name)
        if m is None:
            raise MigrationError(f"{path}: migration files are named NNNN_name.up.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"{path}: version {version} is also {found[version].up_path.name}")
        down = path.with_name(path.name.removesuffix(".up.sql") + ".down.sql")
        with path.open(encoding="utf-8") as f:
            first_line = f.readline().strip()
        found[version] = Migration(
            version=version, name=m.group(2), up_path=path,
            down_path=down if down.exists() else None,
            requires_timescaledb=first_line == REQUIRES_TIMESCALEDB,
            checksum=checksum(path),
        )
    return [found[v] for v in sorted(found)]


def sql(version: int, down: bool = False, *, directory: str | Path | None = None) -> str:
    """The text of one migration's up (or down) step."""
    for m in discover(directory):
        if m.version == version:
            return m.down_sql() if down else m.up_sql()
    raise UnknownMigration(f"no migration with version {version} in {schema_dir(directory)}")


# ---------------------------------------------------------------------------------------------
# Ledger and lock


@dataclass(frozen=True)
class LedgerRow:
    version: int
    name: str
    checksum: str
    applied_at: datetime
    skipped: bool


@dataclass(frozen=True)
class MigrationStatus:
    version: int
    name: str
    state: Literal["applied", "skipped", "pending", "unknown"]  # unknown: in ledger, no file
    applied_at: datetime | None = None
    checksum_changed: bool = False
    requires_timescaledb: bool = False


@dataclass
class UpgradeReport:
    applied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    timescaledb: bool = False  # TimescaleDB in use after the upgrade (hypertables exist)


@contextlib.asynccontextmanager
async def single_connection(conn_or_pool: asyncpg.Connection | asyncpg.Pool
                      ) -> AsyncIterator[asyncpg.Connection]:
    # The advisory lock belongs to a session, so one operation keeps one connection.
    if isinstance(conn_or_pool, asyncpg.Pool):
        async with conn_or_pool.acquire() as conn:
            yield conn
    else:
        yield conn_or_pool


@contextlib.asynccontextmanager
async def migration_lock(conn: asyncpg.Connection, wait_s: float = LOCK_WAIT_S
                         ) -> AsyncIterator[None]:
    """Hold the migration advisory lock. Polled rather than blocking, so the wait is
    bounded, cancellable and logged once."""
    started = time.monotonic()
    pause_s, logged = 0.1, False
    while True:
        async with deadline(QUICK_TIMEOUT_S, "taking the migration lock"):
            got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
        if got:
            break
        if not logged:
            log.info("another process is applying migrations; waiting for it")
            logged = True
        if time.monotonic() - started > wait_s:
            raise MigrationError(f"waited {wait_s:g} s for another process's migrations "
                                 f"(advisory lock {LOCK_KEY}); giving up")
        await asyncio.sleep(pause_s)
        pause_s = min(pause_s * 2, 1.0)
    try:
        yield
    finally:
        if not conn.is_closed():
            async with deadline(QUICK_TIMEOUT_S, "releasing the migration lock"):
                await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


async def _read_ledger(conn: asyncpg.Connection) -> dict[int, LedgerRow]:
    async with deadline(QUICK_TIMEOUT_S, "reading the migration ledger"):
        if not await conn.fetchval(_LEDGER_EXISTS):
            return {}
        rows = await conn.fetch(_READ_LEDGER)
    return {r["version"]: LedgerRow(**dict(r)) for r in rows}


def _check_unchanged(migrations: list[Migration], ledger: dict[int, LedgerRow]) -> None:
    changed = [m for m in migrations
               if m.version in ledger and not ledger[m.version].skipped
               and ledger[m.version].checksum != m.checksum]
    if changed:
        names = ", ".join(str(m.up_path) for m in changed)
        raise MigrationError(
            f"applied migration file changed since it was applied: {names} (its sha256 no "
            f"longer matches {LEDGER}); restore the file and put the change in a new migration"
        )


# ---------------------------------------------------------------------------------------------
# TimescaleDB


async def timescaledb_available(conn: asyncpg.Connection) -> bool:
    async with deadline(QUICK_TIMEOUT_S, "looking for the timescaledb extension"):
        return bool(await conn.fetchval(_TS_AVAILABLE))


async def timescaledb_in_use(conn: asyncpg.Connection) -> bool:
    """True when the extension is installed here and the schema's tables are hypertables."""
    async with deadline(QUICK_TIMEOUT_S, "checking for hypertables"):
        if not await conn.fetchval(_TS_INSTALLED):
            return False
        return bool(await conn.fetchval(_TS_HYPERTABLE))


async def _use_timescaledb(conn: asyncpg.Connection, mode: TimescaleMode) -> bool:
    if mode == "off":
        return False
    available = await timescaledb_available(conn)
    if mode == "require" and not available:
        raise MigrationError("database.timescaledb is 'require' but this PostgreSQL server has "
                             "no timescaledb extension (pg_available_extensions); install "
                             "TimescaleDB or set database.timescaledb = 'auto'")
    return available


# ---------------------------------------------------------------------------------------------
# Operations


def _error(filename: str, exc: asyncpg.PostgresError) -> MigrationError:
    # one line: the server's message with its detail and hint (e.g. "must be preloaded")
    detail = "; ".join(x for x in (getattr(exc, "detail", None), getattr(exc, "hint", None)) if x)
    text = " ".join(f"{exc} {detail}".split())
    return MigrationError(f"migration {filename} failed: {type(exc).__name__}: {text}")


async def _apply(conn: asyncpg.Connection, m: Migration, skip: bool, timeout_s: float) -> None:
    started = time.monotonic()
    try:
        async with deadline(timeout_s, f"migration {m.label}"), conn.transaction():
            if not skip:
                await conn.execute(m.up_sql(), timeout=timeout_s)
            await conn.execute(_RECORD, m.version, m.name, m.checksum, skip)
    except asyncpg.PostgresError as exc:
        raise _error(m.up_path.name, exc) from exc
    if skip:
        log.info("migration skipped (needs TimescaleDB)", migration=m.label)
    else:
        log.info("migration applied", migration=m.label,
                 duration_s=round(time.monotonic() - started, 3))


def _warn_skipped(skipped: list[str], mode: TimescaleMode) -> None:
    reason = ("database.timescaledb is 'off'" if mode == "off"
              else "the timescaledb extension is not available on this server")
    log.warning("TimescaleDB not in use: plain PostgreSQL tables; retention runs as a daemon "
                "job; compression and continuous aggregates are off",
                reason=reason, skipped_migrations=skipped)


async def upgrade(
    conn_or_pool: asyncpg.Connection | asyncpg.Pool,
    target: int | None = None,
    *,
    timescaledb: TimescaleMode = "auto",
    directory: str | Path | None = None,
    timeout_s: float = MIGRATION_TIMEOUT_S,
) -> UpgradeReport:
    """Apply pending migrations up to ``target`` (all when None), under the advisory lock."""
    migrations = discover(directory)
    if target is not None and target not in {m.version for m in migrations}:
        raise UnknownMigration(f"no migration with version {target} in {schema_dir(directory)}")
    report = UpgradeReport()
    async with single_connection(conn_or_pool) as conn, migration_lock(conn):
        async with deadline(QUICK_TIMEOUT_S, "creating the migration ledger"):
            await conn.execute(_CREATE_LEDGER)
        ledger = await _read_ledger(conn)
        _check_unchanged(migrations, ledger)
        unknown = sorted(set(ledger) - {m.version for m in migrations})
        if unknown:
            log.warning("the database has migrations this version of ingest does not know "
                        "(a newer version applied them?)", versions=unknown)
        use_ts = await _use_timescaledb(conn, timescaledb)
        for m in migrations:
            if target is not None and m.version > target:
                break
            row = ledger.get(m.version)
            if row is not None and not (row.skipped and use_ts):
                continue
            skip = m.requires_timescaledb and not use_ts
            await _apply(conn, m, skip, timeout_s)
            (report.skipped if skip else report.applied).append(m.label)
        ledger = await _read_ledger(conn)
        still_skipped = [m.label for m in migrations
                         if m.version in ledger and ledger[m.version].skipped]
        if still_skipped:
            _warn_skipped(still_skipped, timescaledb)
        report.timescaledb = await timescaledb_in_use(conn)
    return report


async def downgrade(
    conn_or_pool: asyncpg.Connection | asyncpg.Pool,
    target_version: int,
    *,
    directory: str | Path | None = None,
    timeout_s: float = MIGRATION_TIMEOUT_S,
) -> list[str]:
    """Revert every recorded migration above ``target_version``, newest first. ``0`` removes
    everything the migrations created, the ledger included. Returns the reverted labels."""
    if target_version < 0:
        raise UnknownMigration(f"downgrade target must be 0 or a version, got {target_version}")
    by_version = {m.version: m for m in discover(directory)}
    reverted: list[str] = []
    async with single_connection(conn_or_pool) as conn, migration_lock(conn):
        ledger = await _read_ledger(conn)
        todo = sorted((v for v in ledger if v > target_version), reverse=True)
        for v in todo:  # check every down step exists before touching anything
            if not ledger[v].skipped:
                if v not in by_version:
                    raise MigrationError(f"migration {v} ({ledger[v].name}) is applied but its "
                                         f"files are missing from {schema_dir(directory)}")
                by_version[v].down_sql()
        for v in todo:
            await _revert(conn, ledger[v], by_version.get(v), timeout_s)
            reverted.append(by_version[v].label if v in by_version else f"{v:04d}_{ledger[v].name}")
        if target_version == 0:
            async with deadline(QUICK_TIMEOUT_S, "dropping the migration ledger"):
                await conn.execute(_DROP_LEDGER)
    return reverted


async def _revert(conn: asyncpg.Connection, row: LedgerRow, m: Migration | None,
                  timeout_s: float) -> None:
    try:
        async with deadline(timeout_s, f"reverting migration {row.version}"), conn.transaction():
            if not row.skipped and m is not None:
                await conn.execute(m.down_sql(), timeout=timeout_s)
            await conn.execute(_FORGET, row.version)
    except asyncpg.PostgresError as exc:
        raise _error(f"{row.version:04d}_{row.name}.down.sql", exc) from exc
    log.info("migration reverted", migration=f"{row.version:04d}_{row.name}",
             was_skipped=row.skipped)


async def status(conn_or_pool: asyncpg.Connection | asyncpg.Pool, *,
                 directory: str | Path | None = None) -> list[MigrationStatus]:
    """Every migration known to the files or the ledger, by version (read-only, no lock)."""
    migrations = {m.version: m for m in discover(directory)}
    async with single_connection(conn_or_pool) as conn:
        ledger = await _read_ledger(conn)
    out: list[MigrationStatus] = []
    for v in sorted(set(migrations) | set(ledger)):
        m, row = migrations.get(v), ledger.get(v)
        if m is None:
            assert row is not None
            out.append(MigrationStatus(v, row.name, "unknown", row.applied_at))
        elif row is None:
            out.append(MigrationStatus(v, m.name, "pending",
                                       requires_timescaledb=m.requires_timescaledb))
        else:
            out.append(MigrationStatus(
                v, m.name, "skipped" if row.skipped else "applied", row.applied_at,
                checksum_changed=not row.skipped and row.checksum != m.checksum,
                requires_timescaledb=m.requires_timescaledb))
    return out
