"""Log lines: JSON shape, stdlib records through the same renderer, redaction, console mode."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog

from ingest import logs


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure() changes process-wide state; put it back for the tests that follow."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    secrets = set(logs._known_secrets)
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    logs._known_secrets.clear()
    logs._known_secrets.update(secrets)
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def out() -> io.StringIO:
    stream = io.StringIO()
    logs.configure(level="INFO", fmt="json", stream=stream)
    return stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    parsed = [json.loads(line) for line in text.splitlines()]  # one object per line
    assert all(isinstance(p, dict) for p in parsed)
    return parsed


def assert_utc_now(stamp: str) -> None:
    assert stamp.endswith(("Z", "+00:00")), stamp
    when = datetime.fromisoformat(stamp)
    assert when.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - when) < timedelta(minutes=1)


# ---------------------------------------------------------------------------------------------
# Shape


def test_json_line_shape_with_bound_context(out: io.StringIO) -> None:
    log = logs.get_logger("ingest.sink", table="trades").bind(exchange="binance")
    structlog.contextvars.bind_contextvars(symbol="BTCUSDT")
    log.info("batch written", rows=500, elapsed_ms=12.5)
    log.warning("queue high", depth=9000)
    first, second = lines(out)
    assert {k: first[k] for k in ("event", "level", "logger", "table", "exchange", "symbol", "rows")} == {
        "event": "batch written",
        "level": "info",
        "logger": "ingest.sink",
        "table": "trades",
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "rows": 500,
    }
    assert first["elapsed_ms"] == 12.5
    assert_utc_now(first["timestamp"])
    assert (second["event"], second["level"], second["depth"]) == ("queue high", "warning", 9000)


def test_every_line_has_the_four_keys(out: io.StringIO) -> None:
    logs.get_logger("a").info("one")
    logs.get_logger("b").error("two")
    logging.getLogger("c").error("three")
    for line in lines(out):
        assert {"timestamp", "level", "event", "logger"} <= set(line)


def test_values_json_cannot_hold_are_rendered_as_text(out: io.StringIO) -> None:
    logs.get_logger("t").info(
        "odd values",
        price=Decimal("9.2E-7"),
        at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        path=Path("/var/spool"),
        items=("a", "b"),
    )
    (line,) = lines(out)
    assert line["price"] == "9.2E-7"  # the decimal's own text, never a float
    assert line["at"].startswith("2024-01-02T03:04:05")
    assert line["path"] == "/var/spool"
    assert line["items"] == ["a", "b"]


def test_level_filter() -> None:
    stream = io.StringIO()
    logs.configure(level="WARNING", fmt="json", stream=stream)
    log = logs.get_logger("t")
    log.info("hidden")
    logging.getLogger("lib").info("hidden too")
    log.warning("shown")
    assert [line["event"] for line in lines(stream)] == ["shown"]


def test_debug_level_shows_debug_lines_from_both_sides() -> None:
    stream = io.StringIO()
    logs.configure(level="DEBUG", fmt="json", stream=stream)
    logs.get_logger("t").debug("ours")
    logging.getLogger("lib").debug("theirs")
    assert [(line["event"], line["level"]) for line in lines(stream)] == [
        ("ours", "debug"),
        ("theirs", "debug"),
    ]


# ---------------------------------------------------------------------------------------------
# The standard library's loggers (asyncio, websockets, aiohttp) go through the same renderer


def test_stdlib_records_are_json_lines(out: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(exchange="gateio")
    logging.getLogger("websockets.client").warning("connection %s closed: %d", "wss://x", 1006)
    (line,) = lines(out)
    assert line["event"] == "connection wss://x closed: 1006"
    assert (line["level"], line["logger"], line["exchange"]) == (
        "warning",
        "websockets.client",
        "gateio",
    )
    assert_utc_now(line["timestamp"])


def test_stdlib_exception_is_rendered_and_scrubbed(out: io.StringIO) -> None:
    try:
        raise ConnectionError("cannot reach postgresql://ingest:db-Secret@db:5432/x")
    except ConnectionError:
        logging.getLogger("asyncpg").exception("pool failed")
    (line,) = lines(out)
    assert line["event"] == "pool failed"
    assert "ConnectionError" in line["exception"]
    assert "Traceback" in line["exception"]
    assert "db-Secret" not in out.getvalue()


def test_structlog_exception_is_rendered_and_scrubbed(out: io.StringIO) -> None:
    try:
        raise ValueError("postgresql://u:exc-Secret@h/db")
    except ValueError:
        logs.get_logger("t").exception("write failed")
    (line,) = lines(out)
    assert "ValueError: postgresql://u:***@h/db" in line["exception"]
    assert "exc-Secret" not in out.getvalue()


# ---------------------------------------------------------------------------------------------
# Redaction


def test_dsn_password_never_appears(out: io.StringIO) -> None:
    dsn = "postgresql://ingest:Pa55word@db:5432/market"
    log = logs.get_logger("t", dsn=dsn)
    log.info(f"connecting to {dsn}", target={"url": dsn}, tried=[dsn, "postgres://x:Pa55word@h/y"])
    logging.getLogger("lib").warning("retrying %s", dsn)
    text = out.getvalue()
    assert "Pa55word" not in text
    first, second = lines(out)
    assert first["dsn"] == "postgresql://ingest:***@db:5432/market"
    assert first["target"] == {"url": "postgresql://ingest:***@db:5432/market"}
    assert first["tried"][1] == "postgres://x:***@h/y"
    assert second["event"] == "retrying postgresql://ingest:***@db:5432/market"


def test_dsn_password_in_the_query_string_never_appears(out: io.StringIO) -> None:
    dsn = "postgresql://ingest@db:5432/market?password=Pa55word&sslmode=require"
    logs.get_logger("t").warning("database not reachable yet; retrying", dsn=dsn)
    assert "Pa55word" not in out.getvalue()
    (line,) = lines(out)
    assert line["dsn"] == "postgresql://ingest@db:5432/market?password=***&sslmode=require"


def test_registered_secret_never_appears(out: io.StringIO) -> None:
    logs.register_secret("CG-abcdef123456")
    log = logs.get_logger("metrics")
    log.info("GET https://api.coingecko.com/?x_cg_demo_api_key=CG-abcdef123456", header="CG-abcdef123456")
    logging.getLogger("aiohttp.client").warning("sent key CG-abcdef123456")
    text = out.getvalue()
    assert "CG-abcdef123456" not in text
    assert text.count("***") == 3


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "db_password",
        "api_key",
        "COINGECKO_API_KEY",
        "apikey",
        "secret",
        "token",
        "Authorization",
    ],
)
def test_secret_named_keys_are_masked(out: io.StringIO, key: str) -> None:
    logs.get_logger("t").info("settings", **{key: "plain-value-123"}, nested={key: "plain-value-456"})
    assert "plain-value" not in out.getvalue()
    (line,) = lines(out)
    assert (line[key], line["nested"][key]) == ("***", "***")


def test_empty_secret_keys_stay_visible(out: io.StringIO) -> None:
    # "no key configured" is worth seeing; an empty value hides nothing.
    logs.get_logger("t").info("settings", api_key="", password=None)
    (line,) = lines(out)
    assert (line["api_key"], line["password"]) == ("", None)


def test_short_secrets_are_not_registered(out: io.StringIO) -> None:
    logs.register_secret("ab")  # masking every "ab" would wreck the log, and hides nothing
    logs.get_logger("t").info("about abc")
    assert lines(out)[0]["event"] == "about abc"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://u:p@h/db", "postgresql://u:***@h/db"),
        ("postgres://u:p@h:5432/db?sslmode=require", "postgres://u:***@h:5432/db?sslmode=require"),
        (
            "a postgresql://u:p1@h/db and postgresql://v:p2@g/db",
            "a postgresql://u:***@h/db and postgresql://v:***@g/db",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("no dsn here", "no dsn here"),
    ],
)
def test_scrub(text: str, expected: str) -> None:
    assert logs.scrub(text) == expected


# ---------------------------------------------------------------------------------------------
# Console renderer


def test_console_renderer_when_asked() -> None:
    stream = io.StringIO()
    logs.configure(level="INFO", fmt="console", stream=stream)
    logs.get_logger("ingest.ws", exchange="huobi").info("connected", url="postgresql://u:c0nsole@h/db")
    logging.getLogger("websockets").warning("library line")
    text = stream.getvalue()
    assert not text.lstrip().startswith("{")
    first, second = text.splitlines()
    assert "connected" in first
    assert "exchange=huobi" in first
    assert "c0nsole" not in text
    assert "postgresql://u:***@h/db" in first
    assert "library line" in second
    assert "\x1b[" not in text  # no colour codes when the stream is not a terminal


def test_auto_is_console_on_a_tty_and_json_otherwise() -> None:
    tty = TTY()
    logs.configure(level="INFO", fmt="auto", stream=tty)
    logs.get_logger("t").info("hello")
    assert "hello" in tty.getvalue()
    with pytest.raises(json.JSONDecodeError):
        json.loads(tty.getvalue().splitlines()[0])

    pipe = io.StringIO()
    logs.configure(level="INFO", fmt="auto", stream=pipe)
    logs.get_logger("t").info("hello")
    assert lines(pipe)[0]["event"] == "hello"


def test_json_when_asked_even_on_a_tty() -> None:
    tty = TTY()
    logs.configure(level="INFO", fmt="json", stream=tty)
    logs.get_logger("t").info("hello")
    assert lines(tty)[0]["event"] == "hello"


# ---------------------------------------------------------------------------------------------
# Loggers made before configure(); known defects flip to passing when fixed


def test_logger_created_before_configure_uses_the_configuration() -> None:
    # Modules do `log = logs.get_logger(__name__)` at import time, and cli.main imports the
    # command's module (for its arguments) before it configures logging.
    early = logs.get_logger("ingest.daemon", exchange="binance")
    stream = io.StringIO()
    logs.configure(level="INFO", fmt="json", stream=stream)
    early.info("starting", password="early-Secret")
    (line,) = lines(stream)
    assert (line["logger"], line["exchange"], line["password"]) == ("ingest.daemon", "binance", "***")


def test_logger_bound_before_configure_uses_the_configuration() -> None:
    early = logs.get_logger("ingest.sink").bind(table="trades")
    stream = io.StringIO()
    logs.configure(level="INFO", fmt="json", stream=stream)
    early.info("starting", password="early-Secret")
    (line,) = lines(stream)
    assert (line["logger"], line["table"], line["password"]) == ("ingest.sink", "trades", "***")


def test_non_string_keys_do_not_raise(out: io.StringIO) -> None:
    logs.get_logger("t").info("depth histogram", counts={1: 5, 20: 1})
    assert lines(out)[0]["counts"] == {"1": 5, "20": 1}
