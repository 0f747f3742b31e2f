"""Running ``ingest replay`` as a real process, and the captures it is pinned to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CAPTURES = REPO.parent / "shared" / "samples" / "cryptofeed"
_OURS = ("DATABASE_URL", "DB_", "INGEST_", "COINGECKO_API_KEY", "PG")


def feed(name: str) -> list[str]:
    """Every file of one cryptofeed capture (``BINANCE.0``, ``.http.0.0``, ``.ws.1.0``)."""
    return sorted(str(p) for p in CAPTURES.glob(f"{name}.*"))


def ingest(*args: str, cwd: Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m ingest.cli`` with a clean environment (no database from the caller's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "ingest.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout_s, check=False)


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def of_type(lines: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in lines if r["type"] == kind]
