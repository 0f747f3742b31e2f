"""Retention and compression: TimescaleDB policies, or a daemon job on plain PostgreSQL.

The intervals come from settings (``[retention]``, ``[compression]``) and are reconciled
after every upgrade: a missing policy is added, one with another interval is replaced, and
an empty setting removes the policy. Table names come only from the constant allow-lists
below; intervals travel as bound parameters. Nothing here pastes data into SQL.

Without TimescaleDB there are no chunks to drop, so ``retention_loop`` deletes expired
rows in bounded batches (short transactions, no long locks) on a schedule instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from ingest.db.migrate import migration_lock, single_connection
from ingest.db.pool import deadline
from ingest.logs import get_logger
from ingest.settings import Settings

log = get_logger("ingest.db.policies")

# Hypertables with a retention setting (the fields of RetentionSettings).
RETENTION_TABLES: tuple[str, ...] = (
    "candlesticks", "trades", "order_books", "market_metrics",
    "portfolio_snapshots", "trade_executions", "audit_log", "security_events",
)
# Hypertables that 0003 enables compression on (the fields of CompressionSettings).
COMPRESSION_TABLES: tuple[str, ...] = ("candlesticks", "trades", "order_books", "market_metrics")

_CURRENT_POLICY = """
SELECT config ->> $2
FROM timescaledb_information.jobs
WHERE proc_name = $3 AND hypertable_name = $1 AND hypertable_schema = current_schema()
LIMIT 1"""
_SAME_INTERVAL = "SELECT $1::text::interval = $2::text::interval"
_ADD = {
    "retention": "SELECT add_retention_policy($1::text::regclass, "
                 "drop_after => $2::text::interval, if_not_exists => true)",
    "compression": "SELECT add_compression_policy($1::text::regclass, "
                   "compress_after => $2::text::interval, if_not_exists => true)",
}
_REMOVE = {
    "retention": "SELECT remove_retention_policy($1::text::regclass, if_exists => true)",
    "compression": "SELECT remove_compression_policy($1::text::regclass, if_exists => true)",
}
_PROC = {"retention": "policy_retention", "compression": "policy_compression"}
_CONFIG_KEY = {"retention": "drop_after", "compression": "compress_after"}

PolicyKind = Literal["retention", "compression"]
_KINDS: tuple[PolicyKind, ...] = ("retention", "compression")
Action = Literal["added", "replaced", "removed", "unchanged", "absent"]


@dataclass(frozen=True)
class PolicyChange:
    table: str
    kind: PolicyKind
    action: Action
    interval: str  # the wanted interval ('' = none)


def _wanted(settings: Settings, kind: PolicyKind) -> list[tuple[str, str]]:
    tables = RETENTION_TABLES if kind == "retention" else COMPRESSION_TABLES
    source = settings.retention if kind == "retention" else settings.compression
    return [(table, str(getattr(source, table)).strip()) for table in tables]


async def _reconcile_one(conn: asyncpg.Connection, table: str, kind: PolicyKind,
                         wanted: str) -> PolicyChange:
    current = await conn.fetchval(_CURRENT_POLICY, table, _CONFIG_KEY[kind], _PROC[kind])
    if not wanted:
        if current is None:
            return PolicyChange(table, kind, "absent", wanted)
        await conn.execute(_REMOVE[kind], table)
        return PolicyChange(table, kind, "removed", wanted)
    if current is not None and await conn.fetchval(_SAME_INTERVAL, current, wanted):
        return PolicyChange(table, kind, "unchanged", wanted)
    async with conn.transaction():
        if current is not None:
            await conn.execute(_REMOVE[kind], table)
        await conn.execute(_ADD[kind], table, wanted)
    return PolicyChange(table, kind, "replaced" if current is not None else "added", wanted)


async def reconcile_policies(conn_or_pool: asyncpg.Connection | asyncpg.Pool,
                             settings: Settings) -> list[PolicyChange]:
    """Make the TimescaleDB retention and compression jobs match ``settings``.

    Call only when TimescaleDB is in use (``migrate.timescaledb_in_use``). Runs under the
    migration lock so two instances starting together do not replace each other's jobs."""
    changes: list[PolicyChange] = []
    timeout_s = settings.database.command_timeout_s * 4
    async with (single_connection(conn_or_pool) as conn, migration_lock(conn),
                deadline(timeout_s, "reconciling policies")):
        for kind in _KINDS:
            for table, wanted in _wanted(settings, kind):
                change = await _reconcile_one(conn, table, kind, wanted)
                changes.append(change)
                if change.action not in ("unchanged", "absent"):
                    log.info("policy " + change.action, table=table, policy=kind,
                             interval=wanted or None)
    return changes


# ---------------------------------------------------------------------------------------------
# Plain PostgreSQL: retention as a daemon job

# One constant statement per table: the table name is never a parameter or a format field.
# Deleting by ctid in batches keeps each transaction short on a large backlog.
_DELETE_EXPIRED: dict[str, str] = {
    "candlesticks": "DELETE FROM candlesticks WHERE ctid = ANY (ARRAY("
                    "SELECT ctid FROM candlesticks WHERE timestamp < $1 LIMIT $2))",
    "trades": "DELETE FROM trades WHERE ctid = ANY (ARRAY("
              "SELECT ctid FROM trades WHERE timestamp < $1 LIMIT $2))",
    "order_books": "DELETE FROM order_books WHERE ctid = ANY (ARRAY("
                   "SELECT ctid FROM order_books WHERE timestamp < $1 LIMIT $2))",
    "market_metrics": "DELETE FROM market_metrics WHERE ctid = ANY (ARRAY("
                      "SELECT ctid FROM market_metrics WHERE timestamp < $1 LIMIT $2))",
    "portfolio_snapshots": "DELETE FROM portfolio_snapshots WHERE ctid = ANY (ARRAY("
                           "SELECT ctid FROM portfolio_snapshots WHERE timestamp < $1 LIMIT $2))",
    "trade_executions": "DELETE FROM trade_executions WHERE ctid = ANY (ARRAY("
                        "SELECT ctid FROM trade_executions WHERE timestamp < $1 LIMIT $2))",
    "audit_log": "DELETE FROM audit_log WHERE ctid = ANY (ARRAY("
                 "SELECT ctid FROM audit_log WHERE timestamp < $1 LIMIT $2))",
    "security_events": "DELETE FROM security_events WHERE ctid = ANY (ARRAY("
                       "SELECT ctid FROM security_events WHERE timestamp < $1 LIMIT $2))",
}
_CUTOFF = "SELECT now() - $1::text::interval"
RETENTION_INTERVAL_S = 3600.0
RETENTION_FIRST_RUN_S = 60.0  # let startup (backfill, first flushes) go first
DELETE_BATCH_ROWS = 10_000


async def _delete_expired(pool: asyncpg.Pool, table: str, cutoff: datetime,
                          timeout_s: float, batch_rows: int) -> int:
    total = 0
    while True:
        async with deadline(timeout_s, f"retention on {table}"):
            result = await pool.execute(_DELETE_EXPIRED[table], cutoff, batch_rows)
        deleted = int(result.split()[-1])
        total += deleted
        if deleted < batch_rows:
            return total


async def run_retention_once(pool: asyncpg.Pool, settings: Settings, *,
                             batch_rows: int = DELETE_BATCH_ROWS) -> dict[str, int]:
    """Delete rows older than each table's retention interval. Returns rows deleted per
    table (tables without a retention setting are left alone)."""
    timeout_s = settings.database.command_timeout_s
    deleted: dict[str, int] = {}
    for table, wanted in _wanted(settings, "retention"):
        if not wanted:
            continue
        async with deadline(timeout_s, "computing the retention cutoff"):
            cutoff = await pool.fetchval(_CUTOFF, wanted)
        deleted[table] = await _delete_expired(pool, table, cutoff, timeout_s, batch_rows)
        if deleted[table]:
            log.info("retention deleted expired rows", table=table, rows=deleted[table],
                     older_than=wanted)
    return deleted


async def retention_loop(pool: asyncpg.Pool, settings: Settings, stop_event: asyncio.Event,
                         *, interval_s: float = RETENTION_INTERVAL_S,
                         first_run_s: float = RETENTION_FIRST_RUN_S) -> None:
    """Run ``run_retention_once`` every ``interval_s`` (jittered by up to 10 %) until
    ``stop_event`` is set. A failed run is logged and retried at the next tick."""
    wait_s = first_run_s
    while not stop_event.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), timeout=wait_s)
            return
        try:
            await run_retention_once(pool, settings)
        except Exception as exc:  # one failed run must not stop the service
            log.warning("retention run failed; will retry", error=f"{type(exc).__name__}: {exc}")
        wait_s = interval_s * random.uniform(0.9, 1.1)
