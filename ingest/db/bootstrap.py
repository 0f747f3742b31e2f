"""The startup sequence for the schema: migrations, then policies. Run before anything
else touches the database (``ingest run``, ``ingest db upgrade/init/reset``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from ingest.db import migrate, policies
from ingest.settings import Settings


@dataclass
class BootstrapResult:
    migrations: migrate.UpgradeReport
    policies: list[policies.PolicyChange] = field(default_factory=list)

    @property
    def timescaledb(self) -> bool:
        return self.migrations.timescaledb


async def bootstrap(conn_or_pool: asyncpg.Connection | asyncpg.Pool, settings: Settings, *,
                    target: int | None = None) -> BootstrapResult:
    """Apply pending migrations (up to ``target``), then reconcile the TimescaleDB
    retention and compression policies with ``settings`` when TimescaleDB is in use.

    Works on a single connection too (the WASM TimescaleDB test server takes only one)."""
    report = await migrate.upgrade(conn_or_pool, target, timescaledb=settings.database.timescaledb)
    result = BootstrapResult(report)
    if report.timescaledb:
        result.policies = await policies.reconcile_policies(conn_or_pool, settings)
    return result
