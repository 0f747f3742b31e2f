"""Exchange adapters: per exchange, typed wire structs and pure parsers.

``parse(frame, recv_ts)`` never does I/O, never reads a clock, never logs and keeps no
state: the same bytes always give the same records (or the same ``ParseError``).
"""
