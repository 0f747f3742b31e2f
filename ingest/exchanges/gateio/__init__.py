"""Gate.io API v4 spot: wire structs (``wire``) and pure parsers (``parse``)."""
