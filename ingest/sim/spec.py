"""What a simulated market is: base/quote, reference price, decimal precision, and how its
integer prices and quantities become the exchange's decimal text."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ingest.sim import walk

# Rough USD prices so that simulated symbols look like themselves; others get a seeded price.
REFERENCE_USD: dict[str, float] = {
    "BTC": 60000.0, "ETH": 3000.0, "BNB": 550.0, "SOL": 150.0, "XRP": 0.55, "DOGE": 0.12,
    "ADA": 0.45, "LTC": 80.0, "TRX": 0.12, "DOT": 6.0, "LINK": 14.0, "AVAX": 30.0,
    "USDT": 1.0, "USDC": 1.0, "FDUSD": 1.0, "TUSD": 1.0, "DAI": 1.0, "USD": 1.0, "EUR": 1.08,
}
KNOWN_QUOTES = ("USDT", "USDC", "FDUSD", "TUSD", "BUSD", "DAI", "BTC", "ETH", "BNB", "EUR", "USD")


def split_symbol(text: str) -> tuple[str, str]:
    """``BTC/USDT``, ``BTC-USDT``, ``BTC_USDT`` or ``BTCUSDT`` → (``BTC``, ``USDT``)."""
    raw = text.strip().upper()
    for sep in ("/", "-", "_"):
        if sep in raw:
            base, _, quote = raw.partition(sep)
            quote = quote.split(":")[0]
            if base and quote:
                return base, quote
    for quote in KNOWN_QUOTES:
        if raw.endswith(quote) and len(raw) > len(quote):
            return raw[: -len(quote)], quote
    raise ValueError(f"cannot split symbol {text!r} into base and quote")


def fixed(value: int, decimals: int) -> str:
    """An integer count of 10**-decimals units as decimal text: fixed(35280, 5) → '0.35280'."""
    if decimals == 0:
        return str(value)
    sign = "-" if value < 0 else ""
    digits = str(abs(value)).rjust(decimals + 1, "0")
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"


class TextCache(dict[int, str]):
    """``fixed``-style text of integers, each formatted once: ``cache[value]``. The live feed
    formats the same few thousand prices and quantities over and over. Cleared when large."""

    def __init__(self, render: Callable[[int], str], max_size: int = 10_000) -> None:
        super().__init__()
        self._render = render
        self._max_size = max_size

    def __missing__(self, value: int) -> str:
        if len(self) >= self._max_size:
            self.clear()
        text = self[value] = self._render(value)
        return text


@dataclass(frozen=True)
class MarketSpec:
    exchange: str
    base: str
    quote: str
    reference_price: float  # in quote currency
    price_decimals: int
    qty_decimals: int
    trades_per_minute: int

    @property
    def symbol(self) -> str:
        return f"{self.base}{self.quote}"

    @property
    def quote_decimals(self) -> int:
        return self.price_decimals + self.qty_decimals

    def price_text(self, ticks: int) -> str:
        return fixed(ticks, self.price_decimals)

    def qty_text(self, units: int) -> str:
        return fixed(units, self.qty_decimals)

    def quote_text(self, value: int) -> str:
        return fixed(value, self.quote_decimals)


def make_spec(exchange: str, symbol: str, seed: int, trades_per_minute: int) -> MarketSpec:
    base, quote = split_symbol(symbol)
    base_usd = REFERENCE_USD.get(base)
    if base_usd is None:  # an unknown coin: a seeded price between 0.05 and 50 USD
        base_usd = 0.05 * 1000 ** walk.unit(walk.stable_key(seed, base), walk.TAG_ANCHOR, 0)
    price = base_usd / REFERENCE_USD.get(quote, 1.0)
    magnitude = math.floor(math.log10(price))
    return MarketSpec(
        exchange=exchange,
        base=base,
        quote=quote,
        reference_price=price,
        price_decimals=min(8, max(0, 6 - magnitude)),
        qty_decimals=min(8, max(0, magnitude + 1)),
        trades_per_minute=max(4, trades_per_minute),
    )
