"""structlog setup: one JSON object per line on stdout, or a console renderer on a TTY.

Every line has an ISO-8601 UTC ``timestamp``, ``level``, ``event`` and ``logger``, plus any
bound context (exchange, symbol, channel, table). A last processor scrubs anything that
looks like a DSN password or an API key, so a secret cannot reach a log line by accident.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

_DSN_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+@")
# A password given as a DSN query parameter (``?password=…``); also used by redact_dsn.
QUERY_PASSWORD = re.compile(r"(?i)((?:^|[?&;])(?:password|passfile|sslpassword)=)[^&;#\s'\"]*")
_SECRET_KEYS = re.compile(r"(password|passwd|secret|api_key|apikey|token|authorization)", re.I)
_known_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Values that must never appear in a log line (database password, API keys)."""
    if value and len(value) >= 4:
        _known_secrets.add(value)


def scrub(text: str) -> str:
    text = _DSN_PASSWORD.sub(r"\1***@", text)
    text = QUERY_PASSWORD.sub(r"\1***", text)
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _scrub_value(key: str, value: Any) -> Any:
    if _SECRET_KEYS.search(key) and value not in (None, ""):
        return "***"
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(key, v) for v in value]
    return value


def redact_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        event[key] = _scrub_value(key, event[key])
    return event


def _json_dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def configure(level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger. Only cli.py calls this."""
    stream = stream or sys.stdout
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _rename_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.format_exc_info,
        redact_processor,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if use_console else structlog.processors.JSONRenderer(serializer=_json_dumps)
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the stdlib (asyncio, websockets, aiohttp) go through the
    # same renderer and the same redaction.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(getattr(logging, level), logging.WARNING) if level != "DEBUG" else logging.DEBUG)


class _LazyLogger:
    """Resolves structlog's configuration at each call, also after ``bind()``: structlog's own
    ``get_logger().bind()`` freezes the configuration in force when bind() runs."""

    __slots__ = ("_context",)

    def __init__(self, context: dict[str, Any]) -> None:
        self._context = context

    def bind(self, **values: Any) -> _LazyLogger:
        return _LazyLogger({**self._context, **values})

    def unbind(self, *keys: str) -> _LazyLogger:
        return _LazyLogger({k: v for k, v in self._context.items() if k not in keys})

    def __getattr__(self, name: str) -> Any:
        return getattr(structlog.get_logger().bind(**self._context), name)


def get_logger(name: str, **context: Any) -> Any:
    """A logger whose lines carry ``logger=name`` and the given context.

    Lazy, also after ``bind()``: a module-level logger created at import (before cli.py
    configures logging) still renders and redacts through the configuration in force when
    it logs."""
    # "logger" would collide with structlog's own parameter names; _rename_logger_name
    # puts the name under "logger".
    return _LazyLogger({"logger_name": name, **context})


def _rename_logger_name(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if "logger_name" in event:
        event["logger"] = event.pop("logger_name")
    return event
