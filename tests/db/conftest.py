"""Helpers for the database tests: the `ingest` CLI in a subprocess, migrated databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from ingest.db import migrate
from ingest.settings import Settings, parse_settings

# Variables that would point the CLI somewhere other than where a test says.
_ENV_DROP = ("DATABASE_URL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD",
             "DB_PASSWORD_FILE", "DB_SSLMODE", "DB_SSLROOTCERT", "INGEST_CONFIG",
             "INGEST_SCHEMA_DIR", "INGEST_LOG_LEVEL", "PGSSLMODE")


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """``ingest ARGS`` as an operator would run it, JSON logs on stdout."""
    return subprocess.run([sys.executable, "-m", "ingest.cli", *args, "--log-format", "json"],
                          cwd=cwd, env=env or cli_env(), capture_output=True, text=True,
                          timeout=timeout_s)


def spawn_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ingest.cli", *args, "--log-format", "json"],
                            cwd=cwd, env=env or cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def settings_for(url: str, **database: object) -> Settings:
    return parse_settings({"database": {"url": url, **database}}, "<test>")


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(database_url)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def migrated(database_url: str, conn: asyncpg.Connection) -> str:
    """A fresh database with every migration applied (0003 skipped: plain PostgreSQL)."""
    await migrate.upgrade(conn)
    return database_url


def log_events(proc: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    """The JSON log lines of a CLI run (stderr for db commands, stdout for `run`)."""
    lines = (proc.stdout or "").splitlines() + (proc.stderr or "").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """What stderr holds besides log lines: the CLI's error message(s)."""
    return [line for line in (proc.stderr or "").splitlines()
            if line.strip() and not line.startswith("{")]
