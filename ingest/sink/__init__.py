"""The market-data writer: one ``Sink`` routing records to per-table COPY writers.

See ``sink.Sink`` for the contract, ``writer`` for queueing and backpressure, ``dbwrite`` for
the COPY / merge / quarantine path, and ``spool`` for the on-disk buffer.
"""

from ingest.sink.sink import Sink, open_side_sink, utc_now
from ingest.sink.spool import Spool
from ingest.sink.tables import SPECS, TableSpec

__all__ = ["SPECS", "Sink", "Spool", "TableSpec", "open_side_sink", "utc_now"]
