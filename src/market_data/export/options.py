"""What an export is asked for: the file format and how CSV writes times. Kept apart from
`formats.py` so the API and the command line can name them without importing Arrow."""

from __future__ import annotations

from enum import StrEnum


class Format(StrEnum):
    csv = "csv"
    parquet = "parquet"


class Timestamps(StrEnum):
    iso = "iso"  # ISO 8601 UTC text
    ms = "ms"  # epoch milliseconds
