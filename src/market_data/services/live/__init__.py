"""Live candles: WebSocket ingestion, the batching writer, and REST catch-up."""
