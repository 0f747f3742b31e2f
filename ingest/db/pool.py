"""Connections: an asyncpg pool built from ``DatabaseSettings``, startup retries, deadlines.

Three promises:

- TLS is what the operator asked for. asyncpg's default (``prefer``) checks no certificate
  and silently falls back to plaintext; ``verify-ca``/``verify-full`` here build a real
  ``SSLContext`` with ``CERT_REQUIRED`` (and hostname checks for ``verify-full``).
- Startup waits for a database that is still coming up (docker compose starts both at
  once) with capped, fully jittered backoff, but a wrong password, a missing role or a
  missing database fails at once with one clear line: retrying cannot fix those.
- Every database call can be bounded by an outer ``asyncio.timeout`` (``deadline``):
  asyncpg's own ``timeout=`` did not stop a COPY to a server that silently stopped
  answering (see reliability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from ingest.errors import DatabaseError
from ingest.logs import get_logger
from ingest.settings import SSL_MODES, DatabaseSettings, redact_dsn

log = get_logger("ingest.db.pool")

# Backoff for startup retries: full jitter (a random wait in [0, min(cap, base * 2^n)])
# so several instances restarted together do not knock on the database in lockstep.
RETRY_BASE_S = 0.5
RETRY_CAP_S = 10.0


# ---------------------------------------------------------------------------------------------
# TLS


def _url_ssl_params(url: str) -> tuple[str, str, str]:
    """(url without sslmode/sslrootcert, its sslmode or '', its sslrootcert or '')."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    mode = next((v for k, v in query if k == "sslmode"), "")
    root = next((v for k, v in query if k == "sslrootcert"), "")
    rest = [(k, v) for k, v in query if k not in ("sslmode", "sslrootcert")]
    return urlunsplit(parts._replace(query=urlencode(rest))), mode, root


def effective_sslmode(db: DatabaseSettings) -> tuple[str, str]:
    """The sslmode and root certificate to use: the stricter of the settings' sslmode and
    one given in the URL (``?sslmode=require``), so neither can weaken the other."""
    _, url_mode, url_root = _url_ssl_params(db.url)
    mode = db.sslmode
    if url_mode:
        if url_mode not in SSL_MODES:
            raise DatabaseError(f"database url: sslmode must be one of {', '.join(SSL_MODES)}, "
                                f"got {url_mode!r}")
        mode = max(mode, url_mode, key=SSL_MODES.index)
    return mode, db.sslrootcert or url_root


def ssl_context_for(db: DatabaseSettings) -> ssl.SSLContext | str | bool:
    """What to pass as asyncpg's ``ssl=``.

    ``disable`` → False; ``allow``/``prefer``/``require`` → the mode name (encryption without
    a certificate check, as in libpq); ``verify-ca``/``verify-full`` → an ``SSLContext`` that
    requires a certificate signed by ``sslrootcert`` (or, without one, by the system's CAs,
    like libpq's ``sslrootcert=system``), and checks the host name for ``verify-full``.
    """
    mode, rootcert = effective_sslmode(db)
    if mode == "disable":
        return False
    if mode in ("allow", "prefer", "require"):
        return mode
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if rootcert:
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=rootcert)
        except (OSError, ssl.SSLError) as exc:
            raise DatabaseError(f"database.sslrootcert: cannot load {rootcert!r}: {exc}") from exc
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = mode == "verify-full"
    return ctx


# ---------------------------------------------------------------------------------------------
# Deadlines


@contextlib.asynccontextmanager
async def deadline(timeout_s: float | None, what: str) -> AsyncIterator[None]:
    """Bound a block of database calls; on expiry raise ``DatabaseError`` naming ``what``.

    ``None`` means no bound (used for migrations an operator runs on purpose, which may
    legitimately take long, e.g. ``migrate_data`` on a large table)."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except TimeoutError as exc:
        raise DatabaseError(f"{what}: no answer from the database within {timeout_s:g} s") from exc


# ---------------------------------------------------------------------------------------------
# Pool


def _pool_kwargs(db: DatabaseSettings, statement_cache_size: int | None) -> dict[str, Any]:
    dsn, _, _ = _url_ssl_params(db.url)
    kwargs: dict[str, Any] = {
        "dsn": dsn,
        "ssl": ssl_context_for(db),
        "timeout": db.connect_timeout_s,
        "command_timeout": db.command_timeout_s,
        "server_settings": {"application_name": "ingest"},
    }
    if statement_cache_size is not None:
        # 0 for pgbouncer in transaction mode and the WASM test server, where named
        # prepared statements outlive a client connection.
        kwargs["statement_cache_size"] = statement_cache_size
    return kwargs


async def connect_pool(
    db: DatabaseSettings,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    statement_cache_size: int | None = None,
) -> asyncpg.Pool:
    """One attempt at an asyncpg pool for ``db`` (no retries; see ``connect_with_retry``).

    Raises the driver's own exceptions so the caller can tell transient from permanent."""
    if not db.url:
        raise DatabaseError("no database URL configured (set DATABASE_URL or database.url)")
    min_size = db.pool_min_size if min_size is None else min_size
    max_size = max(db.pool_max_size if max_size is None else max_size, min_size)
    kwargs = _pool_kwargs(db, statement_cache_size)
    # The pool opens min_size connections up front; bound the whole thing, not each one.
    async with asyncio.timeout(db.connect_timeout_s * 2 + 1):
        pool = await asyncpg.create_pool(min_size=min_size, max_size=max_size, **kwargs)
    assert pool is not None
    return pool


# ---------------------------------------------------------------------------------------------
# Startup retries


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _where(db: DatabaseSettings) -> str:
    parts = urlsplit(db.url)
    host = parts.hostname or "localhost"
    port = parts.port or 5432
    name = parts.path.lstrip("/") or parts.username or "postgres"
    return f"{host}:{port}/{name}"


def permanent_error(exc: BaseException, db: DatabaseSettings) -> DatabaseError | None:
    """A one-line ``DatabaseError`` for failures that retrying cannot fix, else None.

    The messages name host, port, database and user, never the password."""
    where = _where(db)
    user = urlsplit(db.url).username or "?"
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return DatabaseError(f"database {where}: password authentication failed for user "
                             f"{user!r} (check the password in the database URL / DB_PASSWORD)")
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        name = urlsplit(db.url).path.lstrip("/")
        return DatabaseError(f"database {where}: database {name!r} does not exist "
                             "(create it, or point the database URL at an existing one)")
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        # missing role, or pg_hba.conf rejecting this host/user
        return DatabaseError(f"database {where}: {_one_line(exc)} "
                             "(check the user name and pg_hba.conf)")
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return DatabaseError(f"database {where}: {_one_line(exc)}")
    if isinstance(exc, ssl.SSLError):
        return DatabaseError(f"database {where}: TLS failed: {exc.reason or exc}")
    if isinstance(exc, ValueError | asyncpg.InterfaceError):
        return DatabaseError(f"database {where}: {_one_line(exc)}")
    if type(exc) is ConnectionError:
        # asyncpg's "rejected SSL upgrade": the server has no TLS and sslmode requires it
        mode = effective_sslmode(db)[0]
        return DatabaseError(f"database {where}: {_one_line(exc)} (sslmode is {mode})")
    return None


def _transient(db: DatabaseSettings) -> Any:
    def check(exc: BaseException) -> bool:
        if permanent_error(exc, db) is not None:
            return False
        return isinstance(exc, OSError | asyncpg.CannotConnectNowError
                          | asyncpg.TooManyConnectionsError | asyncpg.PostgresConnectionError)
    return check


def _log_retry(db: DatabaseSettings) -> Any:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait_s = state.next_action.sleep if state.next_action else 0.0
        log.warning("database not reachable yet; retrying", dsn=redact_dsn(db.url),
                    attempt=state.attempt_number, retry_in_s=round(wait_s, 2),
                    error=f"{type(exc).__name__}: {exc}"[:300])
    return before_sleep


async def connect_with_retry(
    db: DatabaseSettings,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    statement_cache_size: int | None = None,
) -> asyncpg.Pool:
    """``connect_pool`` retried while the failure looks transient (refused, reset, DNS not
    resolving yet, server starting up, too many connections), for up to
    ``db.startup_retry_max_s``. Permanent failures raise ``DatabaseError`` at once."""
    backoff = wait_random_exponential(multiplier=RETRY_BASE_S, max=RETRY_CAP_S)

    def wait(state: RetryCallState) -> float:
        # never sleep past the deadline: the last attempt happens at startup_retry_max_s
        remaining_s = db.startup_retry_max_s - (state.seconds_since_start or 0.0)
        return max(0.0, min(backoff(state), remaining_s))

    retrying = AsyncRetrying(
        stop=stop_after_delay(db.startup_retry_max_s),
        wait=wait,
        retry=retry_if_exception(_transient(db)),
        before_sleep=_log_retry(db),
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await connect_pool(db, min_size=min_size, max_size=max_size,
                                          statement_cache_size=statement_cache_size)
    except DatabaseError:
        raise
    except Exception as exc:
        permanent = permanent_error(exc, db)
        if permanent is not None:
            raise permanent from exc
        attempts = retrying.statistics.get("attempt_number", 1)
        raise DatabaseError(
            f"database {_where(db)}: cannot connect after {attempts} attempt(s) over "
            f"{db.startup_retry_max_s:g} s: {type(exc).__name__}: {_one_line(exc)}"
        ) from exc
    raise AssertionError("unreachable")  # pragma: no cover
