"""market-data: a complete, correct, queryable history of exchange OHLCV candles."""

__version__ = "0.1.0"
