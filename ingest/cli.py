"""The ``ingest`` command. The only place that configures logging.

Each subcommand lives in its own module and exposes ``add_arguments(parser)`` and
``run(args, settings) -> int`` (sync or async). User mistakes (bad config, bad arguments,
unreachable database) end as one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ingest import __version__, logs
from ingest.errors import IngestError
from ingest.settings import Settings, check_database_url, dsn_password, load_settings

# name → (module, help). Modules are imported only when their command runs, so a broken
# optional part cannot stop `ingest db status` from working.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("ingest.daemon", "run the service: apply the schema, stream, write, until SIGTERM"),
    "db": ("ingest.db.commands", "schema migrations and database statistics"),
    "config": ("ingest.config_cmd", "show the effective settings (secrets redacted)"),
    "replay": ("ingest.replay", "parse captured websocket frames and write (or print) the records"),
    "simulate": ("ingest.sim.cli", "serve the exchanges' and metrics APIs' protocols locally"),
    "backfill": ("ingest.backfill_cmd", "load historical candles and trades through ccxt"),
    "gaps": ("ingest.gaps_cmd", "list (and repair) missing candle windows and trade ids"),
    "metrics": ("ingest.metrics.cmd", "poll the market-wide metric sources"),
    "generate-test-data": ("ingest.testdata", "write random-walk market data for development"),
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="PATH", help="settings file (default: config/ingest.toml, or INGEST_CONFIG)"
    )
    parser.add_argument("--database-url", metavar="URL", help="PostgreSQL URL (overrides settings and DATABASE_URL)")
    parser.add_argument(
        "--log-format", choices=["auto", "json", "console"], help="log renderer (default from settings)"
    )
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level")


def build_parser(load_modules: bool = True, only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="ingest", description="Market data ingestion into TimescaleDB.")
    parser.add_argument("--version", action="version", version=f"ingest {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p)
        if load_modules and (only is None or only == name):
            module = importlib.import_module(module_name)
            module.add_arguments(p)
    return parser


def _settings_for(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    if args.database_url:
        check_database_url(args.database_url, "--database-url", "command line")
        settings = settings.with_database_url(args.database_url)
    return settings


def _configure_logging(args: argparse.Namespace, settings: Settings) -> None:
    # The long-running commands log to stdout (the container's log stream); the others
    # keep stdout for their own output (JSON records, tables) and log to stderr.
    stream = sys.stdout if args.command in ("run", "simulate") else sys.stderr
    level = args.log_level or settings.logging.level
    if getattr(args, "quiet", False) and not args.log_level:
        level = "WARNING"  # --quiet: print nothing, log only what needs attention
    logs.configure(
        level=level,
        fmt=args.log_format or settings.logging.format,
        stream=stream,
    )
    logs.register_secret(settings.metrics.coingecko_api_key)
    logs.register_secret(dsn_password(settings.database.url))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The common options may stand anywhere (also after a nested action such as
    # `ingest db status --config X`): take them out first, then parse the rest.
    pre = _Parser(prog="ingest", add_help=False, allow_abbrev=False)
    _common(pre)
    common, rest = pre.parse_known_args(argv)
    command = next((a for a in rest if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else "")
    args = parser.parse_args(rest)
    for key, value in vars(common).items():
        setattr(args, key, value)
    try:
        settings = _settings_for(args)
        _configure_logging(args, settings)
        module = importlib.import_module(COMMANDS[args.command][0])
        result: Any = module.run(args, settings)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except IngestError as exc:
        print(f"ingest {args.command}: error: {logs.scrub(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (`ingest config show | head`): no traceback, and none at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"ingest {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
