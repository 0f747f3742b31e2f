"""The `ingest` command end to end, as a subprocess: `config show`, and how mistakes are reported.

User mistakes must end as exactly one line on stderr and exit code 2, never a traceback, and
no secret may reach stdout or stderr.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from ingest import __version__
from ingest.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
_OURS = ("DATABASE_URL", "DB_", "INGEST_", "COINGECKO_API_KEY", "PG")


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path,
    stdout: int | None = subprocess.PIPE,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ingest.cli`` in ``cwd`` with a clean environment plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    base["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "ingest.cli", *args],
        env={**base, **(env or {})},
        cwd=cwd,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Assert the run failed as a user mistake should, and return its one stderr line."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


def show(tmp_path: Path, *extra: str, env: Mapping[str, str] | None = None) -> dict[str, object]:
    result = run_cli("config", "show", *extra, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown: dict[str, object] = json.loads(result.stdout)
    return shown


# ---------------------------------------------------------------------------------------------
# config show


def test_config_show_redacts_database_password_and_coingecko_key(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": "postgresql://ingest:Hunter2-db@db:5432/market",
        "COINGECKO_API_KEY": "CG-very-secret-key",
    }
    result = run_cli("config", "show", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Hunter2-db" not in result.stdout + result.stderr
    assert "CG-very-secret-key" not in result.stdout + result.stderr
    shown = json.loads(result.stdout)
    assert shown["database"]["url"] == "postgresql://ingest:***@db:5432/market"
    assert shown["metrics"]["coingecko_api_key"] == "***"
    assert shown["source"] == "<defaults>"  # no ./config/ingest.toml in tmp_path


def test_config_show_redacts_assembled_password(tmp_path: Path) -> None:
    secret = tmp_path / "db_password"
    secret.write_text("p@ss/w:rd%20\n", encoding="utf-8")
    env = {
        "DB_HOST": "timescaledb",
        "DB_USER": "ingest",
        "DB_NAME": "ingest",
        "DB_PASSWORD_FILE": str(secret),
    }
    result = run_cli("config", "show", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "p%40ss" not in result.stdout
    assert "p@ss" not in result.stdout
    assert json.loads(result.stdout)["database"]["url"] == "postgresql://ingest:***@timescaledb:5432/ingest"


def test_config_show_redacts_database_url_option_and_file_key(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[metrics]\ncoingecko_api_key = "CG-in-the-file"\n', encoding="utf-8")
    result = run_cli(
        "config",
        "show",
        "--config",
        str(config),
        "--database-url",
        "postgresql://u:opt-secret@h/db",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "opt-secret" not in result.stdout
    assert "CG-in-the-file" not in result.stdout
    shown = json.loads(result.stdout)
    assert shown["source"] == str(config)
    assert shown["database"]["url"] == "postgresql://u:***@h/db"


def test_common_options_may_follow_the_action(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[health]\nport = 9100\n", encoding="utf-8")
    shown = show(tmp_path, "--config", str(config))
    assert shown["health"] == {"enabled": True, "host": "0.0.0.0", "port": 9100}
    result = run_cli("--config", str(config), "config", "show", cwd=tmp_path)
    assert json.loads(result.stdout)["health"]["port"] == 9100


def test_ingest_config_environment_variable(tmp_path: Path) -> None:
    config = tmp_path / "env.toml"
    config.write_text("[writer]\nmax_batch_rows = 77\n", encoding="utf-8")
    shown = show(tmp_path, env={"INGEST_CONFIG": str(config)})
    assert shown["writer"]["max_batch_rows"] == 77  # type: ignore[index]


def test_config_show_toml_round_trips(tmp_path: Path) -> None:
    simulated = REPO / "config" / "simulated.toml"
    result = run_cli("config", "show", "--format", "toml", "--config", str(simulated), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    dumped = tmp_path / "dumped.toml"
    dumped.write_text(result.stdout, encoding="utf-8")
    again = load_settings(dumped, env={})
    assert dataclasses.replace(again, source="x") == dataclasses.replace(load_settings(simulated, env={}), source="x")


def test_version(tmp_path: Path) -> None:
    result = run_cli("--version", cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, f"ingest {__version__}")


# ---------------------------------------------------------------------------------------------
# Mistakes: one line, exit 2


def test_bad_config_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[writer]\nmax_batch_rows = 10\nflush_ms = 5\n", encoding="utf-8")
    line = one_line_error(run_cli("config", "show", "--config", str(config), cwd=tmp_path))
    assert line.startswith("ingest config: error: ")
    assert str(config) in line
    assert "writer.flush_ms" in line


def test_bad_config_value(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[health]\nport = 'eighty'\n", encoding="utf-8")
    line = one_line_error(run_cli("config", "show", "--config", str(config), cwd=tmp_path))
    assert f"{config}: health.port: must be an integer" in line


def test_bad_toml_syntax(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[health\n", encoding="utf-8")
    line = one_line_error(run_cli("config", "show", "--config", str(config), cwd=tmp_path))
    assert f"{config}: invalid TOML" in line


def test_missing_config_file(tmp_path: Path) -> None:
    line = one_line_error(run_cli("config", "show", "--config", "absent.toml", cwd=tmp_path))
    assert "absent.toml: config file not found" in line


def test_bad_environment(tmp_path: Path) -> None:
    line = one_line_error(run_cli("config", "show", env={"DB_HOST": "h", "DB_PORT": "x"}, cwd=tmp_path))
    assert "environment: DB_PORT" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["config", "show", "--format", "yaml"], "invalid choice: 'yaml'"),
        (["config"], "required: ACTION"),
        (["config", "show", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "required: COMMAND"),
        (["config", "show", "--log-level", "LOUD"], "invalid choice: 'LOUD'"),
    ],
)
def test_bad_cli_argument(tmp_path: Path, args: list[str], expected: str) -> None:
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]


@pytest.mark.parametrize("url", ["notaurl", "localhost:5432/db", "mysql://u@h/db"])
def test_database_url_option_must_be_postgres(tmp_path: Path, url: str) -> None:
    line = one_line_error(run_cli("config", "show", "--database-url", url, cwd=tmp_path))
    assert "--database-url: must be a URL starting with postgres or postgresql" in line


@pytest.mark.parametrize("url", ["postgresql://u:Secr3t@localhost:abc/db",
                                 "postgresql://u:Secr3t@[::1/db",
                                 "postgresql://u@h/db?password=Secr3t&sslmode=bogus"])
def test_database_url_option_that_does_not_parse_is_one_line(tmp_path: Path, url: str) -> None:
    result = run_cli("db", "status", "--database-url", url, cwd=tmp_path)
    line = one_line_error(result)
    assert "--database-url: " in line and "Secr3t" not in result.stderr


def test_config_show_redacts_a_password_in_the_query_string(tmp_path: Path) -> None:
    result = run_cli("config", "show", "--format", "json", "--database-url",
                     "postgresql://bob@db/x?password=Hunter2secret", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Hunter2secret" not in result.stdout + result.stderr
    assert "password=***" in result.stdout


def test_non_utf8_config_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "latin1.toml"
    config.write_bytes(b"[service]\nrecord_dir = '\xe9'\n")
    assert str(config) in one_line_error(run_cli("config", "show", "--config", str(config), cwd=tmp_path))


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--database-url", "mysql://u:leaky-pw@h/db"], {}),
        ([], {"DATABASE_URL": "mysql://u:leaky-pw@h/db"}),
    ],
)
def test_rejected_url_is_not_echoed(tmp_path: Path, args: list[str], env: dict[str, str]) -> None:
    line = one_line_error(run_cli("config", "show", *args, env=env, cwd=tmp_path))
    assert "leaky-pw" not in line


def test_closed_stdout_is_not_a_traceback(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before ingest writes: EPIPE, deterministically
    try:
        result = run_cli("config", "show", cwd=tmp_path, stdout=write_end)
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr
    assert "BrokenPipeError" not in result.stderr


def test_common_option_error_names_the_program(tmp_path: Path) -> None:
    result = run_cli("config", "show", "--log-level", "LOUD", cwd=tmp_path)
    assert result.stderr.startswith("ingest")
