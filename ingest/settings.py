"""Typed, frozen settings: a TOML file, then the environment.

Every key is declared here with its type and range. Unknown keys, wrong types and
out-of-range values raise ``ConfigError`` naming the key and the file. Defaults live in
the dataclasses below and are mirrored, documented, in ``config/ingest.toml``.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlsplit

from ingest.errors import ConfigError
from ingest.logs import QUERY_PASSWORD

EXCHANGES: tuple[str, ...] = ("binance", "gateio", "huobi")
EXCHANGE_ALIASES: dict[str, str] = {
    "binance": "binance",
    "gateio": "gateio",
    "gate": "gateio",
    "huobi": "huobi",
    "htx": "huobi",
}
CHANNELS: tuple[str, ...] = ("candles", "trades", "book")
INTERVALS: tuple[str, ...] = ("1m", "5m", "15m", "30m", "1h", "4h", "1d", "7d")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_INTERVAL_RE = re.compile(
    r"^\s*0*[1-9]\d*\s+(second|minute|hour|day|week|month|year)s?\s*$", re.IGNORECASE
)


def canonical_exchange(name: str) -> str:
    """``gate`` → ``gateio``, ``htx`` → ``huobi``; raises ConfigError for anything unknown."""
    try:
        return EXCHANGE_ALIASES[name.strip().lower()]
    except KeyError:
        raise ConfigError(
            f"unknown exchange {name!r} (known: binance, gateio/gate, huobi/htx)"
        ) from None


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = ""  # empty: DATABASE_URL / DB_* from the environment, else the embedded cluster
    sslmode: str = "prefer"
    sslrootcert: str = ""
    timescaledb: Literal["auto", "require", "off"] = "auto"
    pool_min_size: int = 1
    pool_max_size: int = 8  # the writer alone uses up to 5 (two COPYs for trades)
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 60.0
    startup_retry_max_s: float = 60.0
    embedded_dir: str = ".ingest/pgdata"

    def redacted_url(self) -> str:
        return redact_dsn(self.url)


@dataclass(frozen=True)
class ExchangeSettings:
    enabled: bool = True
    symbols: tuple[str, ...] = ("BTC/USDT", "ETH/USDT")
    channels: tuple[str, ...] = CHANNELS
    candle_intervals: tuple[str, ...] = INTERVALS
    book_depth: int = 20
    snapshot_interval_s: float = 10.0
    ws_url: str = ""
    rest_url: str = ""
    ws_feed_url: str = ""  # HTX only: the /feed endpoint for MBP
    max_streams_per_connection: int = 200
    stale_after_s: float = 60.0
    rest_requests_per_min: int = 600


DEFAULT_ENDPOINTS: dict[str, dict[str, str]] = {
    "binance": {
        "ws_url": "wss://stream.binance.com:9443",
        "rest_url": "https://api.binance.com",
    },
    "gateio": {
        "ws_url": "wss://api.gateio.ws/ws/v4/",
        "rest_url": "https://api.gateio.ws/api/v4",
    },
    "huobi": {
        "ws_url": "wss://api.huobi.pro/ws",
        "ws_feed_url": "wss://api.huobi.pro/feed",
        "rest_url": "https://api.huobi.pro",
    },
}


@dataclass(frozen=True)
class WriterSettings:
    max_batch_rows: int = 5000
    flush_interval_ms: int = 250
    memory_limit_mb: int = 128
    spool_dir: str = ".ingest/spool"
    spool_max_mb: int = 1024
    shutdown_budget_s: float = 8.0
    db_timeout_s: float = 30.0
    retry_max_s: float = 30.0
    stats_interval_s: float = 60.0


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = True
    coingecko_url: str = "https://api.coingecko.com/api/v3"
    coingecko_interval_s: float = 600.0
    coingecko_api_plan: Literal["demo", "pro"] = "demo"
    coingecko_api_key: str = ""  # normally from COINGECKO_API_KEY; never logged
    fear_greed_url: str = "https://api.alternative.me"
    fear_greed_interval_s: float = 3600.0
    jitter_s: float = 30.0
    load_fear_greed_history: bool = True
    http_timeout_s: float = 15.0
    max_body_bytes: int = 2_000_000


@dataclass(frozen=True)
class RetentionSettings:
    """Retention per table as a PostgreSQL interval; empty keeps the data forever."""

    candlesticks: str = "7 years"
    trades: str = "7 years"
    order_books: str = "7 years"
    market_metrics: str = "7 years"
    portfolio_snapshots: str = "5 years"
    trade_executions: str = ""
    audit_log: str = "3 years"
    security_events: str = "2 years"


@dataclass(frozen=True)
class CompressionSettings:
    """Compress chunks older than this (TimescaleDB only); empty disables the policy."""

    candlesticks: str = "30 days"
    trades: str = "7 days"
    order_books: str = "7 days"
    market_metrics: str = "90 days"


@dataclass(frozen=True)
class HealthSettings:
    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = 8080


@dataclass(frozen=True)
class LoggingSettings:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"
    summary_interval_s: float = 60.0


@dataclass(frozen=True)
class BackfillSettings:
    gap_repair: bool = True
    gap_repair_lookback_h: float = 24.0
    request_timeout_s: float = 30.0


@dataclass(frozen=True)
class ServiceSettings:
    shard: str = "0/1"  # K/N: this instance takes the (exchange, symbol) pairs hashing to K
    record_dir: str = ""  # raw frame recording; empty disables


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    exchanges: Mapping[str, ExchangeSettings] = field(default_factory=dict)
    writer: WriterSettings = field(default_factory=WriterSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    compression: CompressionSettings = field(default_factory=CompressionSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    backfill: BackfillSettings = field(default_factory=BackfillSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    source: str = "<defaults>"  # the file the settings came from, for messages

    def enabled_exchanges(self) -> dict[str, ExchangeSettings]:
        return {k: v for k, v in self.exchanges.items() if v.enabled}

    def with_database_url(self, url: str) -> Settings:
        return dataclasses.replace(self, database=dataclasses.replace(self.database, url=url))


# ---------------------------------------------------------------------------------------------
# Loading


_RANGES: dict[str, tuple[float, float]] = {
    "database.pool_min_size": (1, 100),
    "database.pool_max_size": (1, 100),
    "database.connect_timeout_s": (0.1, 600),
    "database.command_timeout_s": (0.1, 3600),
    "database.startup_retry_max_s": (0, 3600),
    "exchange.book_depth": (1, 1000),
    "exchange.snapshot_interval_s": (0.1, 86400),
    "exchange.max_streams_per_connection": (1, 1024),
    "exchange.stale_after_s": (1, 86400),
    "exchange.rest_requests_per_min": (1, 100000),
    "writer.max_batch_rows": (1, 1_000_000),
    "writer.flush_interval_ms": (1, 600_000),
    "writer.memory_limit_mb": (1, 65536),
    "writer.spool_max_mb": (0, 1_048_576),
    "writer.shutdown_budget_s": (0.5, 600),
    "writer.db_timeout_s": (0.1, 3600),
    "writer.retry_max_s": (0.1, 3600),
    "writer.stats_interval_s": (1, 86400),
    "metrics.coingecko_interval_s": (10, 86400 * 7),
    "metrics.fear_greed_interval_s": (60, 86400 * 7),
    "metrics.jitter_s": (0, 3600),
    "metrics.http_timeout_s": (0.1, 600),
    "metrics.max_body_bytes": (1024, 1 << 30),
    "health.port": (0, 65535),
    "logging.summary_interval_s": (1, 86400),
    "backfill.gap_repair_lookback_h": (0, 24 * 365),
    "backfill.request_timeout_s": (0.1, 600),
}


def _fail(source: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {problem}")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise _fail(source, key, f"must be one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(source, key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(source, key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(source, key, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(source, key, f"must be a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise _fail(source, key, f"must be a list of strings, got {value!r}")
        for item in value:
            if not isinstance(item, str):
                raise _fail(source, key, f"must be a list of strings, got item {item!r}")
        return tuple(value)
    raise _fail(source, key, f"unsupported type {tp}")  # pragma: no cover - a bug here


def _build(cls: type[Any], data: Any, prefix: str, source: str, range_prefix: str) -> Any:
    if not isinstance(data, dict):
        raise _fail(source, prefix, f"must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise _fail(source, f"{prefix}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(names))})")
    values: dict[str, Any] = {}
    for name, raw in data.items():
        key = f"{prefix}.{name}"
        value = _coerce(raw, hints[name], key, source)
        bounds = _RANGES.get(f"{range_prefix}.{name}")
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            raise _fail(source, key, f"must be between {bounds[0]:g} and {bounds[1]:g}, got {value!r}")
        values[name] = value
    return cls(**values)


def _check_interval(value: str, key: str, source: str) -> None:
    if value and not _INTERVAL_RE.match(value):
        raise _fail(source, key, f"must be a positive interval like '7 years' or '30 days', got {value!r}")


def _check_url(value: str, key: str, source: str, schemes: tuple[str, ...]) -> None:
    if not value:
        return
    shown = redact_dsn(value)  # a rejected URL may still carry a password
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise _fail(source, key, f"not a valid URL ({exc}): {shown!r}") from None
    if parts.scheme not in schemes:
        raise _fail(source, key, f"must be a URL starting with {' or '.join(schemes)}, got {shown!r}")
    if schemes[0] == "postgres":
        params = dict(parse_qsl(parts.query))
        mode = params.get("sslmode")
        if mode is not None and mode not in SSL_MODES:
            raise _fail(source, key, f"sslmode must be one of {', '.join(SSL_MODES)}, got {mode!r}")


def check_database_url(value: str, key: str, source: str) -> None:
    """A PostgreSQL URL that the pool and the messages can parse: ConfigError otherwise."""
    _check_url(value, key, source, ("postgres", "postgresql"))


def _build_exchange(name: str, data: Any, source: str) -> ExchangeSettings:
    prefix = f"exchanges.{name}"
    built: ExchangeSettings = _build(ExchangeSettings, data, prefix, source, "exchange")
    canon = canonical_exchange(name)
    for channel in built.channels:
        if channel not in CHANNELS:
            raise _fail(source, f"{prefix}.channels", f"unknown channel {channel!r} (known: {', '.join(CHANNELS)})")
    for interval in built.candle_intervals:
        if interval not in INTERVALS:
            raise _fail(
                source, f"{prefix}.candle_intervals",
                f"unsupported interval {interval!r} (supported: {' '.join(INTERVALS)})",
            )
    for symbol in built.symbols:
        if not re.fullmatch(r"[A-Z0-9]{1,20}/[A-Z0-9]{1,20}", symbol):
            raise _fail(source, f"{prefix}.symbols", f"symbol {symbol!r} must be unified form like 'BTC/USDT'")
    endpoints: dict[str, Any] = {
        k: getattr(built, k) or v for k, v in DEFAULT_ENDPOINTS[canon].items()
    }
    for key in ("ws_url", "ws_feed_url"):
        _check_url(endpoints.get(key, getattr(built, key)), f"{prefix}.{key}", source, ("ws", "wss"))
    _check_url(endpoints["rest_url"], f"{prefix}.rest_url", source, ("http", "https"))
    return dataclasses.replace(built, **endpoints)


def default_exchanges() -> dict[str, ExchangeSettings]:
    endpoints: dict[str, dict[str, Any]] = dict(DEFAULT_ENDPOINTS)
    return {name: dataclasses.replace(ExchangeSettings(), **endpoints[name]) for name in EXCHANGES}


def _validate_shard(value: str, source: str, key: str = "service.shard") -> None:
    m = re.fullmatch(r"(\d+)/(\d+)", value)
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise _fail(source, key, f"must be K/N with 0 <= K < N, got {value!r}")


def parse_settings(data: Mapping[str, Any], source: str) -> Settings:
    """Build settings from a parsed TOML document (no environment applied)."""
    sections: dict[str, type[Any]] = {
        "database": DatabaseSettings, "writer": WriterSettings, "metrics": MetricsSettings,
        "retention": RetentionSettings, "compression": CompressionSettings,
        "health": HealthSettings, "logging": LoggingSettings, "backfill": BackfillSettings,
        "service": ServiceSettings,
    }
    known = set(sections) | {"exchanges"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise _fail(source, unknown[0], f"unknown section (known: {', '.join(sorted(known))})")
    built = {name: _build(cls, data.get(name, {}), name, source, name) for name, cls in sections.items()}

    exchanges = default_exchanges()
    raw_exchanges = data.get("exchanges", {})
    if not isinstance(raw_exchanges, dict):
        raise _fail(source, "exchanges", "must be a table of [exchanges.NAME] sections")
    seen: dict[str, str] = {}
    for name, section in raw_exchanges.items():
        try:
            canon = canonical_exchange(name)
        except ConfigError as exc:
            raise _fail(source, f"exchanges.{name}", str(exc)) from None
        if canon in seen:
            raise _fail(source, f"exchanges.{name}", f"duplicates [exchanges.{seen[canon]}]")
        seen[canon] = name
        exchanges[canon] = _build_exchange(name, section, source)

    db: DatabaseSettings = built["database"]
    if db.sslmode not in SSL_MODES:
        raise _fail(source, "database.sslmode", f"must be one of {', '.join(SSL_MODES)}, got {db.sslmode!r}")
    if db.pool_min_size > db.pool_max_size:
        raise _fail(source, "database.pool_min_size", "must not exceed database.pool_max_size")
    _check_url(db.url, "database.url", source, ("postgres", "postgresql"))
    for f in dataclasses.fields(RetentionSettings):
        _check_interval(getattr(built["retention"], f.name), f"retention.{f.name}", source)
    for f in dataclasses.fields(CompressionSettings):
        _check_interval(getattr(built["compression"], f.name), f"compression.{f.name}", source)
    _validate_shard(built["service"].shard, source)
    m: MetricsSettings = built["metrics"]
    _check_url(m.coingecko_url, "metrics.coingecko_url", source, ("http", "https"))
    _check_url(m.fear_greed_url, "metrics.fear_greed_url", source, ("http", "https"))
    return Settings(exchanges=types.MappingProxyType(exchanges), source=source, **built)


def _read_secret_file(path: str, var: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"environment: {var}: cannot read {path!r}: {exc.strerror}") from None


def database_url_from_env(env: Mapping[str, str]) -> str:
    """``DATABASE_URL``, else a URL assembled from the seed's ``DB_*`` variables, else ''."""
    if env.get("DATABASE_URL"):
        url = env["DATABASE_URL"]
        _check_url(url, "DATABASE_URL", "environment", ("postgres", "postgresql"))
        return url
    password = env.get("DB_PASSWORD", "")
    if env.get("DB_PASSWORD_FILE"):
        password = _read_secret_file(env["DB_PASSWORD_FILE"], "DB_PASSWORD_FILE")
    if not any(env.get(k) for k in ("DB_HOST", "DB_NAME", "DB_USER")):
        return ""
    host = env.get("DB_HOST", "localhost")
    port = env.get("DB_PORT", "5432")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"environment: DB_PORT: must be a port number, got {port!r}")
    user = quote(env.get("DB_USER", "postgres"), safe="")
    auth = f"{user}:{quote(password, safe='')}@" if password else f"{user}@"
    if ":" in host:
        try:
            host = f"[{ipaddress.IPv6Address(host.strip('[]'))}]"
        except ValueError:
            raise ConfigError(f"environment: DB_HOST: must be a host name or an address without "
                              f"a port (the port goes in DB_PORT), got {host!r}") from None
    url = f"postgresql://{auth}{host}:{port}/{quote(env.get('DB_NAME', 'ingest'), safe='')}"
    _check_url(url, "DB_HOST", "environment", ("postgres", "postgresql"))
    return url


def apply_env(settings: Settings, env: Mapping[str, str]) -> Settings:
    db = settings.database
    url = database_url_from_env(env)
    if url:
        db = dataclasses.replace(db, url=url)
    if env.get("DB_SSLMODE"):
        if env["DB_SSLMODE"] not in SSL_MODES:
            raise ConfigError(f"environment: DB_SSLMODE: must be one of {', '.join(SSL_MODES)}")
        db = dataclasses.replace(db, sslmode=env["DB_SSLMODE"])
    if env.get("DB_SSLROOTCERT"):
        db = dataclasses.replace(db, sslrootcert=env["DB_SSLROOTCERT"])
    metrics = settings.metrics
    if env.get("COINGECKO_API_KEY"):
        metrics = dataclasses.replace(metrics, coingecko_api_key=env["COINGECKO_API_KEY"])
    logging_ = settings.logging
    if env.get("INGEST_LOG_LEVEL"):
        level = env["INGEST_LOG_LEVEL"].upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("environment: INGEST_LOG_LEVEL: must be DEBUG, INFO, WARNING or ERROR")
        logging_ = dataclasses.replace(logging_, level=level)  # type: ignore[arg-type]
    return dataclasses.replace(settings, database=db, metrics=metrics, logging=logging_)


DEFAULT_CONFIG = Path("config/ingest.toml")


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Load ``path`` (or ``INGEST_CONFIG``, or ``config/ingest.toml`` if present, else defaults)
    and apply the environment."""
    env = os.environ if env is None else env
    chosen = Path(path) if path else (Path(env["INGEST_CONFIG"]) if env.get("INGEST_CONFIG") else None)
    if chosen is None and DEFAULT_CONFIG.is_file():
        chosen = DEFAULT_CONFIG
    if chosen is None:
        return apply_env(parse_settings({}, "<defaults>"), env)
    try:
        text = chosen.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{chosen}: config file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{chosen}: not UTF-8 text (bad byte at offset {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{chosen}: cannot read config file: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{chosen}: invalid TOML: {exc}") from None
    return apply_env(parse_settings(data, str(chosen)), env)


# ---------------------------------------------------------------------------------------------
# Redaction


_SECRET_FIELDS = {"coingecko_api_key"}


_NETLOC_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@?#]*:)[^@/?#]*@", re.I)


def redact_dsn(url: str) -> str:
    """``postgresql://user:secret@host/db?password=x`` → ``postgresql://user:***@host/db?password=***``.
    String-based, so it also works on URLs too malformed to parse."""
    if not url:
        return url
    url = _NETLOC_PASSWORD.sub(r"\1***@", url)
    head, sep, query = url.partition("?")
    return head + sep + QUERY_PASSWORD.sub(r"\1***", query) if sep else url


def dsn_password(url: str) -> str:
    """The password a DSN carries, in its netloc or its query string ('' if none)."""
    try:
        parts = urlsplit(url)
        password = parts.password or ""
    except ValueError:
        return ""
    for key, value in parse_qsl(parts.query):
        if key.lower() == "password" and value:
            password = password or value
    return password


def to_display(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data with secrets redacted (for ``ingest config show``)."""

    def conv(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            out = {}
            for f in dataclasses.fields(obj):
                value = getattr(obj, f.name)
                if f.name in _SECRET_FIELDS and value:
                    value = "***"
                elif f.name == "url" and isinstance(obj, DatabaseSettings):
                    value = redact_dsn(value)
                out[f.name] = conv(value)
            return out
        if isinstance(obj, Mapping | types.MappingProxyType):
            return {k: conv(v) for k, v in obj.items()}
        if isinstance(obj, tuple):
            return list(obj)
        return obj

    return conv(settings)  # type: ignore[no-any-return]


def port_number(text: str) -> int:
    """A ``--…-port`` argument: 0-65535 (0: any free port). For argparse ``type=``."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, got {text!r}")
    return int(text)


def parse_shard(value: str, source: str = "command line", key: str = "--shard") -> tuple[int, int]:
    _validate_shard(value, source, key)
    k, n = value.split("/")
    return int(k), int(n)
