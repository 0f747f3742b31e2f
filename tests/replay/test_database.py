"""`ingest replay` into a real PostgreSQL: migrations applied, rows written through the Sink,
and a second replay of the same capture leaves exactly the same rows."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from .util import CAPTURES, ingest, json_lines, of_type

QUERIES = {
    "trades": "SELECT exchange, symbol, trade_id, timestamp, price, quantity, quote_quantity, "
              "is_buyer_maker FROM trades ORDER BY exchange, symbol, trade_id, timestamp",
    "order_books": "SELECT exchange, symbol, timestamp, bids::text, asks::text, last_update_id "
                   "FROM order_books ORDER BY exchange, symbol, timestamp",
    "candlesticks": "SELECT * FROM candlesticks ORDER BY exchange, symbol, interval, timestamp",
}


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "ingest.toml"
    path.write_text(f'[writer]\nspool_dir = "{tmp_path / "spool"}"\nflush_interval_ms = 50\n')
    return path


async def rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(url)
    try:
        return {t: [tuple(r) for r in await conn.fetch(q)] for t, q in QUERIES.items()}
    finally:
        await conn.close()


async def test_replay_twice_leaves_the_rows_of_once(database_url: str, tmp_path: Path) -> None:
    args = ("replay", str(CAPTURES), "--config", str(write_config(tmp_path)),
            "--database-url", database_url, "--log-level", "WARNING")
    first = ingest(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "trades: 84 records, 84 written, 0 already stored, 0 rejected" in first.stdout
    assert "order_books: 68 records, 68 written, 0 already stored, 0 rejected" in first.stdout
    assert "candlesticks: 0 records, 0 written" in first.stdout
    assert "106 unparseable" in first.stdout  # bookTicker and spot.tickers: counted, not fatal
    once = await rows(database_url)
    assert (len(once["trades"]), len(once["order_books"])) == (84, 68)

    second = ingest(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "trades: 84 records, 0 written, 84 already stored, 0 rejected" in second.stdout
    assert "order_books: 68 records, 0 written, 68 already stored, 0 rejected" in second.stdout
    assert await rows(database_url) == once

    # What was stored is what --dry-run prints, value for value.
    dry = ingest("replay", "--dry-run", str(CAPTURES), cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    printed = json_lines(dry.stdout)
    trades = sorted(
        (t["exchange"], t["symbol"], t["trade_id"], t["timestamp"], Decimal(t["price"]),
         Decimal(t["quantity"]), Decimal(t["quote_quantity"]), t["is_buyer_maker"])
        for t in of_type(printed, "trade")
    )
    assert [(*r[:3], r[3].isoformat(), *r[4:]) for r in once["trades"]] == trades
    books = sorted(
        (b["exchange"], b["symbol"], b["timestamp"], b["bids"], b["asks"], b["last_update_id"])
        for b in of_type(printed, "book_snapshot")
    )
    stored = [(r[0], r[1], r[2].isoformat(), json.loads(r[3]), json.loads(r[4]), r[5])
              for r in once["order_books"]]
    assert stored == books
