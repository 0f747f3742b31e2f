"""A private PostgreSQL cluster in a local directory (initdb + pg_ctl).

Used by ``ingest run`` when no database is configured, and by the test suite for its
throwaway cluster. PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` system user (or ``nobody``) and the data directory is handed to that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ingest.errors import DatabaseError


def find_pg_bindir() -> Path:
    """The directory holding initdb/pg_ctl/postgres: PG_BINDIR, pg_config, PATH, usual paths."""
    candidates: list[Path] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                 check=True)
            candidates.append(Path(out.stdout.strip()))
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).resolve().parent)
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    candidates += [Path("/usr/local/pgsql/bin"), Path("/opt/homebrew/bin"), Path("/usr/local/bin")]
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists() and (c / "postgres").exists():
            return c
    raise DatabaseError(
        "no PostgreSQL server binaries found (initdb, pg_ctl, postgres); install the "
        "postgresql package, set PG_BINDIR, or configure a database with DATABASE_URL"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether 127.0.0.1:port can be listened on right now. SO_REUSEADDR as postgres sets
    it, so connections of the last run lingering in TIME_WAIT do not count as busy."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _run_as_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise DatabaseError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    port: int = 0
    password: str | None = None  # None: trust auth on loopback (tests only)
    durable: bool = True  # False: fsync/synchronous_commit off, for throwaway test clusters
    bindir: Path = field(default_factory=find_pg_bindir)
    user: str = "ingest"
    _started: bool = False

    def __post_init__(self) -> None:
        # Absolute: the server runs with its data directory as cwd, so a relative socket
        # directory or log path would point somewhere else.
        self.data_dir = Path(self.data_dir).resolve()

    def _cmd(self, *args: str) -> list[str]:
        pw = _run_as_user()
        if pw is None:
            return list(args)
        return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", *args]

    def _chown(self, path: Path) -> None:
        pw = _run_as_user()
        if pw is not None:
            for p in [path, *path.rglob("*")]:
                os.chown(p, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str, timeout_s: float = 120) -> None:
        proc = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise DatabaseError(f"{Path(args[0]).name} failed: {' | '.join(tail)}")

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def running_port(self) -> int | None:
        """The port of a postmaster already running on this data directory (another
        ``ingest`` process started it), else None. Read from postmaster.pid: line 1 is the
        pid, line 4 the port."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None  # no pid file, or an unreadable one
        try:
            os.kill(pid, 0)
        except PermissionError:
            pass  # alive, run as another user (the postgres user when we are root)
        except OSError:
            return None  # a stale pid file: the process is gone
        return port

    def init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.data_dir)
        args = [str(self.bindir / "initdb"), "-D", str(self.pgdata), "-U", self.user,
                "-E", "UTF8", "--locale=C", "--no-sync"]
        pwfile = self.data_dir / ".pwfile"
        if self.password is not None:
            pwfile.write_text(self.password)
            self._chown(pwfile)
            args += ["--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                     f"--pwfile={pwfile}"]
        else:
            args += ["--auth=trust"]
        try:
            self._run(*args)
        finally:
            pwfile.unlink(missing_ok=True)

    def start(self) -> None:
        if not self.initialised():
            self.init()
        self.port = self.port or free_port()
        sock_dir = self.data_dir / "run"
        sock_dir.mkdir(exist_ok=True)
        self._chown(sock_dir)
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {sock_dir} "
                "-c max_connections=200 -c shared_buffers=128MB")
        if not self.durable:
            # Throwaway test clusters only: a crash may lose the last commits.
            opts += " -c synchronous_commit=off -c fsync=off"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "-l",
                  str(self.data_dir / "postgres.log"), "-o", opts, "-w", "-t", "60", "start")
        self._started = True

    def stop(self, mode: str = "fast") -> None:
        if self._started or (self.pgdata / "postmaster.pid").exists():
            with contextlib.suppress(DatabaseError, subprocess.TimeoutExpired):
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "-m", mode,
                          "-w", "-t", "60", "stop")
            self._started = False

    def dsn(self, database: str = "postgres") -> str:
        auth = f"{self.user}:{self.password}@" if self.password else f"{self.user}@"
        return f"postgresql://{auth}127.0.0.1:{self.port}/{database}"


def embedded_for_run(base_dir: Path) -> EmbeddedPostgres:
    """The service's own cluster under ``base_dir``, with a generated password kept in a
    0600 file beside it (so other local users cannot simply connect)."""
    secret = base_dir / "password"
    if secret.exists():
        password = secret.read_text().strip()
    else:
        base_dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
        with os.fdopen(fd, "w") as f:
            f.write(password)
    server = EmbeddedPostgres(data_dir=base_dir, password=password)
    port_file = base_dir / "port"
    remembered = port_file.read_text().strip() if port_file.exists() else ""
    port = server.running_port()  # already up (another ingest started it): use it as it is
    if port is None:
        # The remembered port keeps the URL stable across restarts, unless something else
        # took it meanwhile.
        port = int(remembered) if remembered.isdigit() else 0
        if not port or not port_is_free(port):
            port = free_port()
    port_file.write_text(str(port))
    server.port = port
    return server
