"""Fault injection: the ``--faults`` spec and the per-connection effects.

Spec: comma-separated ``key=value`` items, e.g.
``drop=30,skip_seq=0.01,dup=0.01,reorder=0.01,malformed=0.001,stall=BTCUSDT:20,http429=0.1``

=================  =====================================================================
``drop=S``         abort every websocket connection S seconds after it opened (no close
                   frame: a TCP-level drop)
``skip_seq=P``     with probability P per book message, withhold it: the book and the
                   stream's sequence advance, so the next message shows a real gap
``dup=P``          with probability P a data frame is sent twice
``reorder=P``      with probability P a data frame is held back and sent after the next
``malformed=P``    with probability P a data frame is replaced by a broken one (truncated
                   JSON; for HTX also a non-gzip payload)
``stall=[EX/]SYM:AFTER[:FOR]``
                   from AFTER seconds after start (for FOR seconds, default forever) SYM
                   publishes nothing on any exchange (or only on EX); REST history is
                   unaffected, so the missed trades can be repaired. Repeatable.
``http429=P``      with probability P a REST request is answered 429 with Retry-After
``retry_after=S``  the Retry-After value in seconds (default 1)
``shutdown=S``     Binance: every S seconds send ``serverShutdown`` to every connection
                   and close it 1 s later
=================  =====================================================================

Probabilities are in [0, 1]; the random draws are seeded, so a run is repeatable.
"""

from __future__ import annotations

import gzip
import math
import random
from dataclasses import dataclass, field

from ingest.errors import ConfigError
from ingest.settings import canonical_exchange


@dataclass(frozen=True)
class Stall:
    symbol: str  # compact, upper case
    after_s: float
    for_s: float | None = None  # None: until the end of the run
    exchange: str | None = None  # None: every exchange

    def active(self, exchange: str, symbol: str, elapsed_s: float) -> bool:
        if symbol != self.symbol or (self.exchange and exchange != self.exchange):
            return False
        if elapsed_s < self.after_s:
            return False
        return self.for_s is None or elapsed_s < self.after_s + self.for_s


@dataclass(frozen=True)
class FaultSpec:
    drop_every_s: float | None = None
    skip_seq: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    malformed: float = 0.0
    stalls: tuple[Stall, ...] = ()
    http429: float = 0.0
    retry_after_s: int = 1
    shutdown_every_s: float | None = None
    text: str = field(default="", compare=False)

    def stalled(self, exchange: str, symbol: str, elapsed_s: float) -> bool:
        return any(s.active(exchange, symbol, elapsed_s) for s in self.stalls)

    @property
    def touches_frames(self) -> bool:
        return bool(self.dup or self.reorder or self.malformed)


_PROBABILITIES = {"skip_seq", "dup", "reorder", "malformed", "http429"}


def _number(key: str, value: str, spec: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"--faults {spec!r}: {key}={value!r} is not a number") from None
    if not math.isfinite(number) or number < 0 or (key in _PROBABILITIES and number > 1):
        raise ConfigError(f"--faults {spec!r}: {key}={value} is out of range")
    return number


def _stall(value: str, spec: str) -> Stall:
    target, _, times = value.partition(":")
    # EXCHANGE/SYMBOL, or a symbol alone in any spelling (BTCUSDT, BTC/USDT, BTC_USDT)
    head, _, rest = target.partition("/")
    # Two slashes: EXCHANGE/BASE/QUOTE, the first part must be an exchange (checked below).
    exchange, symbol = (head, rest) if "/" in rest or _is_exchange(head) else ("", target)
    parts = times.split(":") if times else []
    if not symbol or not 1 <= len(parts) <= 2:
        raise ConfigError(
            f"--faults {spec!r}: stall={value!r} should be [EXCHANGE/]SYMBOL:AFTER_S[:FOR_S]"
        )
    try:
        canonical = canonical_exchange(exchange) if exchange else None
    except ConfigError as exc:
        raise ConfigError(f"--faults {spec!r}: stall={value!r}: {exc}") from None
    return Stall(
        symbol=compact_symbol(symbol),
        after_s=_number("stall", parts[0], spec),
        for_s=_number("stall", parts[1], spec) if len(parts) == 2 else None,
        exchange=canonical,
    )


def compact_symbol(symbol: str) -> str:
    """``BTC/USDT``, ``btc_usdt``, ``BTC-USDT`` → ``BTCUSDT``."""
    return symbol.replace("/", "").replace("_", "").replace("-", "").upper()


def _is_exchange(name: str) -> bool:
    try:
        canonical_exchange(name)
    except ConfigError:
        return False
    return True


def parse_faults(spec: str) -> FaultSpec:
    """Parse a ``--faults`` spec; raises ConfigError naming the bad item."""
    values: dict[str, float] = {}
    stalls: list[Stall] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep:
            raise ConfigError(f"--faults {spec!r}: {item!r} should be key=value")
        if key == "stall":
            stalls.append(_stall(value.strip(), spec))
        elif key in _PROBABILITIES | {"drop", "retry_after", "shutdown"}:
            values[key] = _number(key, value.strip(), spec)
        else:
            raise ConfigError(
                f"--faults {spec!r}: unknown fault {key!r} (known: drop, skip_seq, dup, "
                "reorder, malformed, stall, http429, retry_after, shutdown)"
            )
    return FaultSpec(
        drop_every_s=values.get("drop") or None,
        skip_seq=values.get("skip_seq", 0.0),
        dup=values.get("dup", 0.0),
        reorder=values.get("reorder", 0.0),
        malformed=values.get("malformed", 0.0),
        stalls=tuple(stalls),
        http429=values.get("http429", 0.0),
        retry_after_s=max(0, round(values.get("retry_after", 1))),
        shutdown_every_s=values.get("shutdown") or None,
        text=spec,
    )


class FrameFaults:
    """Per-connection frame faults (duplicate, reorder, malform), from a seeded generator."""

    def __init__(self, spec: FaultSpec, seed: int) -> None:
        self._spec = spec
        self._rng = random.Random(seed)
        self._held: str | bytes | None = None

    def apply(self, frame: str | bytes) -> list[str | bytes]:
        """The frames to send in place of ``frame`` (possibly none, possibly several)."""
        spec, rng = self._spec, self._rng
        if spec.malformed and rng.random() < spec.malformed:
            frame = self._malform(frame)
        out: list[str | bytes] = [frame]
        if spec.dup and rng.random() < spec.dup:
            out.append(frame)
        if self._held is not None:
            out.append(self._held)
            self._held = None
        elif spec.reorder and rng.random() < spec.reorder:
            self._held = out.pop(0)
        return out

    def _malform(self, frame: str | bytes) -> str | bytes:
        if isinstance(frame, bytes):
            if self._rng.random() < 0.5:
                return b"\x00not-gzip" + frame[:8]
            return gzip.compress(b'{"ch":"market.', mtime=0)
        return frame[: max(1, len(frame) // 2)]
