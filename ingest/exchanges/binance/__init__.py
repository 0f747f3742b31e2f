"""Binance spot: wire structs (``wire``) and pure parsers (``parse``)."""
