"""ingest: market data ingestion into TimescaleDB."""

__version__ = "0.1.0"
