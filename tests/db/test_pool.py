"""Connecting: TLS modes, permanent failures as one clear line, retries, deadlines."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from ingest.db.embedded import EmbeddedPostgres, free_port
from ingest.db.pool import (
    connect_pool,
    connect_with_retry,
    deadline,
    effective_sslmode,
    ssl_context_for,
)
from ingest.errors import DatabaseError
from ingest.settings import DatabaseSettings

from .conftest import error_lines, log_events, run_cli

PASSWORD = "Corr3ct-Horse-Battery"
WRONG = "Wr0ng-Pa55word-Here"


def _with(url: str, *, user: str | None = None, password: str | None = None,
          database: str | None = None) -> str:
    parts = urlsplit(url)
    user = user or parts.username or "postgres"
    auth = f"{user}:{password}@" if password else f"{user}@"
    netloc = f"{auth}{parts.hostname}:{parts.port}"
    path = f"/{database}" if database else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


@pytest.fixture(scope="module")
def password_server() -> Iterator[EmbeddedPostgres]:
    """A cluster with scram-sha-256 authentication (the shared one trusts everybody)."""
    tmp = Path(tempfile.mkdtemp(prefix="ingest-test-pw-"))
    tmp.chmod(0o755)
    server = EmbeddedPostgres(data_dir=tmp, password=PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(tmp, ignore_errors=True)


# ---- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def root_cert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make a test certificate)")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=db.example", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "root.pem")], check=True, capture_output=True)
    return d / "root.pem"


def test_ssl_modes_map_to_asyncpg() -> None:
    url = "postgresql://u@db.example/x"
    assert ssl_context_for(DatabaseSettings(url=url, sslmode="disable")) is False
    for mode in ("allow", "prefer", "require"):
        assert ssl_context_for(DatabaseSettings(url=url, sslmode=mode)) == mode


def test_verify_modes_build_a_checking_context(root_cert: Path) -> None:
    url = "postgresql://u@db.example/x"
    full = ssl_context_for(DatabaseSettings(url=url, sslmode="verify-full",
                                            sslrootcert=str(root_cert)))
    assert isinstance(full, ssl.SSLContext)
    assert full.verify_mode == ssl.CERT_REQUIRED and full.check_hostname is True
    assert any(c["subject"] == ((("commonName", "db.example"),),) for c in full.get_ca_certs())
    ca = ssl_context_for(DatabaseSettings(url=url, sslmode="verify-ca",
                                          sslrootcert=str(root_cert)))
    assert isinstance(ca, ssl.SSLContext)
    assert ca.verify_mode == ssl.CERT_REQUIRED and ca.check_hostname is False
    # without a root certificate: the system's CAs, still verified
    system = ssl_context_for(DatabaseSettings(url=url, sslmode="verify-full"))
    assert isinstance(system, ssl.SSLContext) and system.verify_mode == ssl.CERT_REQUIRED


def test_the_stricter_sslmode_wins_and_bad_rootcert_is_clear(tmp_path: Path) -> None:
    url = "postgresql://u@db.example/x?sslmode=verify-full&application_name=a"
    assert effective_sslmode(DatabaseSettings(url=url, sslmode="prefer"))[0] == "verify-full"
    weak = "postgresql://u@db.example/x?sslmode=disable"
    assert effective_sslmode(DatabaseSettings(url=weak, sslmode="require"))[0] == "require"
    with pytest.raises(DatabaseError, match="sslrootcert"):
        ssl_context_for(DatabaseSettings(url=url, sslrootcert=str(tmp_path / "missing.pem")))


async def test_require_tls_against_a_server_without_it_fails_fast(pg_admin_dsn: str) -> None:
    db = DatabaseSettings(url=pg_admin_dsn, sslmode="require", startup_retry_max_s=30)
    started = time.monotonic()
    with pytest.raises(DatabaseError, match="sslmode is require"):
        await connect_with_retry(db)
    assert time.monotonic() - started < 5  # permanent: not retried


# ---- permanent failures ------------------------------------------------------------------------


def test_wrong_password_is_one_line_without_the_password(
        password_server: EmbeddedPostgres, tmp_path: Path) -> None:
    url = _with(password_server.dsn("postgres"), password=WRONG)
    started = time.monotonic()
    proc = run_cli("db", "status", "--database-url", url, cwd=tmp_path)
    assert time.monotonic() - started < 20  # not retried for startup_retry_max_s (60 s)
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert "password authentication failed for user 'ingest'" in lines[0]
    assert WRONG not in proc.stdout + proc.stderr


async def test_right_password_connects(password_server: EmbeddedPostgres) -> None:
    pool = await connect_with_retry(DatabaseSettings(url=password_server.dsn("postgres")))
    try:
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


def test_missing_database_is_one_clear_line(pg_admin_dsn: str, tmp_path: Path) -> None:
    proc = run_cli("db", "status", "--database-url", _with(pg_admin_dsn, database="no_such_db"),
                   cwd=tmp_path)
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "database 'no_such_db' does not exist" in lines[0]


def test_missing_role_is_one_clear_line(pg_admin_dsn: str, tmp_path: Path) -> None:
    proc = run_cli("db", "upgrade", "--database-url", _with(pg_admin_dsn, user="no_such_role"),
                   cwd=tmp_path)
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and 'role "no_such_role" does not exist' in lines[0]


# ---- transient failures ------------------------------------------------------------------------


def test_unreachable_server_is_retried_then_reported(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = tmp_path / "ingest.toml"
    config.write_text("[database]\nstartup_retry_max_s = 2.0\nconnect_timeout_s = 1.0\n")
    url = f"postgresql://ingest:{WRONG}@127.0.0.1:{port}/ingest"
    proc = run_cli("db", "status", "--config", str(config), "--database-url", url, cwd=tmp_path)
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "cannot connect after" in lines[0]
    retries = [e for e in log_events(proc) if "retrying" in str(e["event"])]
    assert retries and all(e["level"] == "warning" for e in retries), proc.stderr
    assert all(str(e["dsn"]).startswith("postgresql://ingest:***@127.0.0.1") for e in retries)
    assert WRONG not in proc.stdout + proc.stderr


async def test_retry_succeeds_once_the_server_is_up() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ingest-test-late-"))
    tmp.chmod(0o755)  # the server may run as another user (postgres when we are root)
    server = EmbeddedPostgres(data_dir=tmp, port=free_port())
    await asyncio.to_thread(server.init)
    db = DatabaseSettings(url=server.dsn("postgres"), startup_retry_max_s=30)
    connecting = asyncio.create_task(connect_with_retry(db))
    await asyncio.sleep(1.0)
    assert not connecting.done()
    await asyncio.to_thread(server.start)
    try:
        pool = await asyncio.wait_for(connecting, timeout=30)
        assert await pool.fetchval("SELECT 1") == 1
        await pool.close()
    finally:
        await asyncio.to_thread(server.stop, "immediate")
        shutil.rmtree(tmp, ignore_errors=True)


# ---- deadlines ---------------------------------------------------------------------------------


async def test_deadline_cuts_a_hung_call(database_url: str) -> None:
    pool = await connect_pool(DatabaseSettings(url=database_url), min_size=1, max_size=1)
    try:
        with pytest.raises(DatabaseError, match=r"within 0\.2 s"):
            async with deadline(0.2, "sleeping"):
                await pool.execute("SELECT pg_sleep(5)")
        assert await pool.fetchval("SELECT 2") == 2  # the pool is still usable
    finally:
        await pool.close()


async def test_connect_pool_needs_a_url() -> None:
    with pytest.raises(DatabaseError, match="no database URL"):
        await connect_pool(DatabaseSettings(url=""))


async def test_pool_sizes_and_timeouts_come_from_settings(database_url: str) -> None:
    db = DatabaseSettings(url=database_url, pool_min_size=2, pool_max_size=3,
                          command_timeout_s=0.5)
    pool = await connect_pool(db)
    try:
        assert pool.get_min_size() == 2 and pool.get_max_size() == 3
        with pytest.raises(asyncio.TimeoutError):
            await pool.execute("SELECT pg_sleep(3)")
        name = await pool.fetchval("SELECT current_setting('application_name')")
        assert name == "ingest"
    finally:
        await pool.close()


def test_asyncpg_errors_used_exist() -> None:
    # guard against a driver upgrade renaming what permanent_error() relies on
    for name in ("InvalidPasswordError", "InvalidCatalogNameError",
                 "InvalidAuthorizationSpecificationError", "CannotConnectNowError",
                 "TooManyConnectionsError", "PostgresConnectionError"):
        assert hasattr(asyncpg, name)
