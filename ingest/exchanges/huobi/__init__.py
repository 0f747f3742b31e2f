"""HTX (Huobi) spot: wire structs (``wire``) and pure parsers (``parse``)."""
