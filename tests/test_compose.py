"""docker-compose.yml, Dockerfile, .dockerignore and config/example.env agree with the settings.

There is no Docker engine here, so the files are read as data: every variable they use is one
the code reads or the env file documents, ports and paths match the settings' defaults, and the
health check command really works against an HTTP server.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

import ingest.settings as settings_module  # noqa: E402
from ingest.settings import HealthSettings, WriterSettings, load_settings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
DOCKERFILE = (REPO / "Dockerfile").read_text(encoding="utf-8")
EXAMPLE_ENV = (REPO / "config" / "example.env").read_text(encoding="utf-8")
DEFAULTS = load_settings(REPO / "config" / "ingest.toml", env={})

_VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


# ---------------------------------------------------------------------------------------------
# Helpers


def example_env_assignments() -> dict[str, str]:
    """Uncommented KEY=VALUE lines: what a copied .env sets."""
    out: dict[str, str] = {}
    for line in EXAMPLE_ENV.splitlines():
        m = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


def example_env_documented() -> set[str]:
    """Names shown as KEY=VALUE, set or commented out."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", EXAMPLE_ENV, re.MULTILINE))


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}; $$ is a literal $."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        got = env.get(name)
        missing = not got if op and op.startswith(":") else got is None
        if op in (":-", "-") and missing:
            return str(arg)
        if op in (":?", "?") and missing:
            raise AssertionError(f"${{{name}}} is required: {arg}")
        return got or ""

    return _VAR.sub(sub, value).replace("$$", "$")


def compose_variables() -> set[str]:
    text = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return {m.group(1) for m in _VAR.finditer(text)}


def settings_env_names() -> set[str]:
    source = Path(settings_module.__file__).read_text(encoding="utf-8")
    return set(re.findall(r"""env(?:\.get\(|\[)["']([A-Z][A-Z0-9_]*)["']""", source))


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in DOCKERFILE.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return [(x.split(None, 1)[0].upper(), x.split(None, 1)[1]) for x in joined]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def one(stage: list[tuple[str, str]], op: str) -> str:
    found = [args for o, args in stage if o == op]
    assert len(found) == 1, (op, found)
    return found[0]


def duration_s(text: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(text))
    assert parts and "".join(n + u for n, u in parts) == str(text), text
    return sum(float(n) * units[u] for n, u in parts)


def container_port(mapping: str) -> int:
    return int(str(mapping).rsplit(":", 1)[-1].split("/")[0])


def pg_options(command: list[str]) -> dict[str, str]:
    assert command[0] == "postgres"
    options: dict[str, str] = {}
    for flag, setting in zip(command[1::2], command[2::2], strict=True):
        assert flag == "-c"
        key, value = setting.split("=", 1)
        options[key] = value
    return options


def size_bytes(text: str) -> int:
    m = re.fullmatch(r"(\d+)(kB|MB|GB|TB)", text)
    assert m, text
    return int(m.group(1)) * {"kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}[m.group(2)]


# ---------------------------------------------------------------------------------------------
# Variables


def test_every_compose_variable_is_documented_in_example_env() -> None:
    used = compose_variables()
    assert {"POSTGRES_USER", "POSTGRES_DB"} <= used
    assert used <= example_env_documented(), used - example_env_documented()


def test_every_variable_settings_reads_is_documented() -> None:
    read = settings_env_names()
    # The regex must really see the code's variables, or this test proves nothing.
    assert {
        "DATABASE_URL",
        "DB_HOST",
        "DB_PORT",
        "DB_NAME",
        "DB_USER",
        "DB_PASSWORD",
        "DB_PASSWORD_FILE",
        "DB_SSLMODE",
        "DB_SSLROOTCERT",
        "COINGECKO_API_KEY",
        "INGEST_LOG_LEVEL",
        "INGEST_CONFIG",
    } <= read
    assert read <= example_env_documented(), read - example_env_documented()


def test_every_variable_the_package_reads_is_documented() -> None:
    pattern = re.compile(r"""os\.(?:environ(?:\.get)?[\[(]|getenv\()\s*["']([A-Z][A-Z0-9_]*)["']""")
    read = {
        name for path in (REPO / "ingest").rglob("*.py") for name in pattern.findall(path.read_text(encoding="utf-8"))
    }
    assert read <= example_env_documented(), read - example_env_documented()


def test_ingest_environment_names_are_ones_settings_reads() -> None:
    names = set(SERVICES["ingest"]["environment"])
    assert names <= settings_env_names(), names - settings_env_names()


def test_example_env_sets_no_secret_and_no_database_url() -> None:
    assigned = example_env_assignments()
    # A set DATABASE_URL in .env would win over the DB_* that compose gives the container.
    assert "DATABASE_URL" not in assigned
    for name in assigned:
        assert not re.search(r"PASSWORD$|API_KEY$|SECRET$", name), name


def test_compose_environment_yields_the_intended_database_url(tmp_path: Path) -> None:
    host_env = example_env_assignments()
    secret = tmp_path / "db_password"
    secret.write_text("s3cret/+=\n", encoding="utf-8")
    ingest = SERVICES["ingest"]
    env = {**host_env}  # env_file: .env, copied from config/example.env
    env.update({k: interpolate(str(v), host_env) for k, v in ingest["environment"].items()})
    assert env["DB_PASSWORD_FILE"] == "/run/secrets/db_password"
    env["DB_PASSWORD_FILE"] = str(secret)  # where compose would mount the secret

    db = SERVICES["timescaledb"]["environment"]
    user, name = (
        interpolate(db["POSTGRES_USER"], host_env),
        interpolate(db["POSTGRES_DB"], host_env),
    )
    port = container_port(SERVICES["timescaledb"]["ports"][0])
    s = load_settings(REPO / "config" / "ingest.toml", env=env)
    assert s.database.url == f"postgresql://{user}:s3cret%2F%2B%3D@timescaledb:{port}/{name}"
    assert s.logging.level == host_env.get("INGEST_LOG_LEVEL", "INFO")


def test_both_services_share_the_password_secret() -> None:
    top = COMPOSE["secrets"]
    ingest_file = PurePosixPath(SERVICES["ingest"]["environment"]["DB_PASSWORD_FILE"])
    db_file = PurePosixPath(SERVICES["timescaledb"]["environment"]["POSTGRES_PASSWORD_FILE"])
    assert ingest_file == db_file
    assert ingest_file.parent == PurePosixPath("/run/secrets")
    for service in ("ingest", "timescaledb"):
        assert ingest_file.name in SERVICES[service]["secrets"]
    assert "file" in top[ingest_file.name]
    assert "POSTGRES_PASSWORD" not in SERVICES["timescaledb"]["environment"]


# ---------------------------------------------------------------------------------------------
# timescaledb


def test_timescaledb_service() -> None:
    db = SERVICES["timescaledb"]
    assert re.fullmatch(r"timescale/timescaledb(-ha)?:(latest-pg16|2\.\d+\.\d+-pg16)", db["image"])
    test = db["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL")
    assert "pg_isready" in " ".join(test)
    source, target = db["volumes"][0].split(":", 1)
    assert target == "/var/lib/postgresql/data"
    assert source in COMPOSE["volumes"]  # a named volume, not a bind mount
    assert db["restart"] == "unless-stopped"


def test_timescaledb_healthcheck_uses_the_container_variables() -> None:
    # $$ defers expansion to the container's shell, where POSTGRES_USER/DB are set.
    cmd = interpolate(" ".join(SERVICES["timescaledb"]["healthcheck"]["test"][1:]), {})
    argv = shlex.split(cmd)
    assert argv[0] == "pg_isready"
    assert argv[argv.index("-U") + 1] == "${POSTGRES_USER}"
    assert argv[argv.index("-d") + 1] == "${POSTGRES_DB}"


def test_timescaledb_tuning() -> None:
    options = pg_options(SERVICES["timescaledb"]["command"])
    assert set(options["shared_preload_libraries"].split(",")) == {
        "timescaledb",
        "pg_stat_statements",
    }
    assert options["checkpoint_completion_target"] == "0.9"
    assert options["wal_buffers"] == "16MB"
    assert options["default_statistics_target"] == "100"
    assert options["random_page_cost"] == "1.1"
    shared = size_bytes(options["shared_buffers"])
    cache = size_bytes(options["effective_cache_size"])
    assert 128 << 20 <= shared < cache <= 64 << 30
    assert size_bytes(options["maintenance_work_mem"]) <= shared
    workers = int(options["max_worker_processes"])
    assert workers >= 3 + int(options["timescaledb.max_background_workers"]) + int(options["max_parallel_workers"])
    assert size_bytes(SERVICES["timescaledb"]["shm_size"].replace("mb", "MB")) >= 256 << 20


# ---------------------------------------------------------------------------------------------
# ingest


def test_ingest_service() -> None:
    svc = SERVICES["ingest"]
    assert svc["build"] == "."
    assert svc["depends_on"] == {"timescaledb": {"condition": "service_healthy"}}
    assert svc["env_file"] in (".env", [".env"])
    assert svc["restart"] == "unless-stopped"
    assert svc["environment"]["DB_HOST"] == "timescaledb"
    assert int(svc["environment"]["DB_PORT"]) == container_port(SERVICES["timescaledb"]["ports"][0])


def test_ingest_port_is_the_health_port() -> None:
    ports = SERVICES["ingest"]["ports"]
    assert [container_port(p) for p in ports] == [HealthSettings().port]
    assert DEFAULTS.health.port == HealthSettings().port
    assert str(HealthSettings().port) in one(final_stage(), "EXPOSE").split()


def test_stop_grace_period_exceeds_the_shutdown_budget() -> None:
    grace = duration_s(SERVICES["ingest"]["stop_grace_period"])
    assert grace > WriterSettings().shutdown_budget_s
    assert grace > DEFAULTS.writer.shutdown_budget_s
    assert SERVICES["ingest"].get("stop_signal", "SIGTERM") == "SIGTERM"


def test_spool_volume_is_the_writers_spool_dir() -> None:
    workdir = PurePosixPath(one(final_stage(), "WORKDIR"))
    spool = workdir / DEFAULTS.writer.spool_dir
    mounts = [m.split(":") for m in SERVICES["ingest"]["volumes"]]
    assert [(src, PurePosixPath(dst)) for src, dst, *_ in mounts] == [(mounts[0][0], spool)]
    assert mounts[0][0] in COMPOSE["volumes"]
    assert json.loads(one(final_stage(), "VOLUME")) == [str(spool)]


# ---------------------------------------------------------------------------------------------
# Dockerfile


def test_dockerfile_stages_user_and_entrypoint() -> None:
    instructions = dockerfile_instructions()
    froms = [args for op, args in instructions if op == "FROM"]
    assert len(froms) >= 2
    assert " AS " in froms[0].upper()
    args = dict(a.split("=", 1) for op, a in instructions if op == "ARG" and "=" in a)
    final_image = interpolate(froms[-1].split()[0], args)
    assert final_image == "python:3.11-slim"
    stage = final_stage()
    user = one(stage, "USER")
    assert user.split(":")[0] not in ("root", "0")
    assert json.loads(one(stage, "ENTRYPOINT")) == ["ingest"]
    assert json.loads(one(stage, "CMD")) == ["run"]
    # The spool directory exists and belongs to the service user before VOLUME freezes it.
    assert any(op == "RUN" and "chown" in a and f"{user}:" in a and ".ingest" in a for op, a in stage)


def test_dockerfile_config_is_found_in_the_image() -> None:
    stage = final_stage()
    workdir = PurePosixPath(one(stage, "WORKDIR"))
    assert any(op == "COPY" and a.split()[0].rstrip("/") == "config" for op, a in stage)
    env = one(stage, "ENV")
    m = re.search(r"INGEST_CONFIG=(\S+)", env)
    assert m and PurePosixPath(m.group(1)) == workdir / "config" / "ingest.toml"


def test_dockerfile_schema_dir_holds_the_migrations() -> None:
    stage = final_stage()
    workdir = PurePosixPath(one(stage, "WORKDIR"))
    m = re.search(r"INGEST_SCHEMA_DIR=(\S+)", one(stage, "ENV"))
    assert m
    copies = {
        workdir / a.split()[1].rstrip("/"): a.split()[0].rstrip("/")
        for op, a in stage
        if op == "COPY" and not a.startswith("--")
    }
    source = copies[PurePosixPath(m.group(1))]
    assert any((REPO / source).glob("*.up.sql"))


def test_builder_resolves_symlinks_inside_the_package() -> None:
    """A symlink in ingest/ (ingest/db/schema -> ../../schema) dangles unless the builder
    copies its target to the same relative place."""
    instructions = dockerfile_instructions()
    end = [i for i, (op, _) in enumerate(instructions) if op == "FROM"][1]
    builder = [a.split() for op, a in instructions[:end] if op == "COPY"]
    copied = {PurePosixPath(dst.rstrip("/")) for *_, dst in builder}
    for link in (REPO / "ingest").rglob("*"):
        if link.is_symlink():
            target = (link.parent / link.readlink()).resolve().relative_to(REPO)
            assert PurePosixPath(target) in copied, (link, target)


def test_dockerfile_copy_sources_exist_and_are_not_ignored() -> None:
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".env", ".git", ".venv"} <= set(ignored)
    sources = [
        src
        for op, a in dockerfile_instructions()
        if op == "COPY" and "--from=" not in a
        for src in a.split()[:-1]
        if not src.startswith("--")
    ]
    assert {"pyproject.toml", "README.md", "ingest", "config/", "schema/"} <= set(sources)
    for src in sources:
        assert (REPO / src).exists(), src
        for pattern in ignored:
            assert not fnmatch.fnmatch(src.rstrip("/"), pattern.rstrip("/")), (src, pattern)


def test_dockerfile_dependency_step_reads_pyproject() -> None:
    run = next(a for op, a in dockerfile_instructions() if op == "RUN" and "tomllib" in a)
    code = re.search(r'python -c "(.*?)"\s*>', run)
    assert code
    out = subprocess.run(
        [sys.executable, "-c", code.group(1)], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    expected = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    assert out[:-1] == expected


# ---------------------------------------------------------------------------------------------
# The health check commands, run for real


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(params=[200, 503])
def health_server(request: pytest.FixtureRequest) -> Iterator[tuple[int, int]]:
    handler = type("Handler", (_Health,), {"status": request.param})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], request.param
    finally:
        server.shutdown()
        server.server_close()


def healthchecks() -> dict[str, list[str]]:
    docker = one(final_stage(), "HEALTHCHECK")
    docker_cmd = json.loads(docker[docker.index("CMD ") + 4 :])
    compose_cmd = SERVICES["ingest"]["healthcheck"]["test"]
    assert compose_cmd[0] == "CMD"
    return {"Dockerfile": docker_cmd, "docker-compose.yml": compose_cmd[1:]}


@pytest.mark.parametrize("where", ["Dockerfile", "docker-compose.yml"])
def test_healthcheck_targets_the_health_endpoint(where: str) -> None:
    argv = healthchecks()[where]
    assert argv[:2] == ["python", "-c"]  # slim has no curl
    assert f"http://127.0.0.1:{HealthSettings().port}/healthz" in argv[2]


@pytest.mark.parametrize("where", ["Dockerfile", "docker-compose.yml"])
def test_healthcheck_exit_code_follows_the_endpoint(where: str, health_server: tuple[int, int]) -> None:
    port, status = health_server
    code = healthchecks()[where][2].replace(f":{HealthSettings().port}/", f":{port}/")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30, check=False)
    assert result.returncode == (0 if status == 200 else 1), result.stderr


def test_healthcheck_fails_when_nothing_listens() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    port = server.server_address[1]
    server.server_close()  # the port is free again: connection refused
    code = healthchecks()["Dockerfile"][2].replace(f":{HealthSettings().port}/", f":{port}/")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30, check=False)
    assert result.returncode == 1
