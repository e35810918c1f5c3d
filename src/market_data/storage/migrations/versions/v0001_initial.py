"""Initial schema: candles, jobs, gaps, per-series stats and state, empty ranges, quarantine.

Revision ID: 0001
Revises:
Create Date: 2026-02-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from market_data.storage.dialect_time import EpochMs

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _series() -> list[sa.Column[str]]:
    return [
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("timeframe", sa.Text, nullable=False),
    ]


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)


def upgrade() -> None:
    op.create_table(
        "candles",
        *_series(),
        sa.Column("ts", EpochMs, nullable=False),
        sa.Column("open", sa.Double, nullable=False),
        sa.Column("high", sa.Double, nullable=False),
        sa.Column("low", sa.Double, nullable=False),
        sa.Column("close", sa.Double, nullable=False),
        sa.Column("volume", sa.Double, nullable=False),
        sa.Column("final", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.PrimaryKeyConstraint("exchange", "symbol", "timeframe", "ts", name="pk_candles"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "ingestion_jobs",
        _id(),
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text),
        sa.Column("timeframe", sa.Text),
        sa.Column("job_type", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("started_at", EpochMs, nullable=False),
        sa.Column("completed_at", EpochMs),
        sa.Column("candles_fetched", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_ingestion_jobs"),
    )
    op.create_index("ix_ingestion_jobs_started_at", "ingestion_jobs", ["started_at"])
    op.create_index("ix_ingestion_jobs_status", "ingestion_jobs", ["status"])
    op.create_table(
        "data_gaps",
        _id(),
        *_series(),
        sa.Column("gap_start", EpochMs, nullable=False),
        sa.Column("gap_end", EpochMs, nullable=False),
        sa.Column("detected_at", EpochMs, nullable=False),
        sa.Column("repaired_at", EpochMs),
        sa.Column("status", sa.Text, nullable=False, server_default="open"),
        sa.Column("candles_repaired", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", EpochMs),
        sa.Column("last_error", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_data_gaps"),
        sa.UniqueConstraint(
            "exchange",
            "symbol",
            "timeframe",
            "gap_start",
            name="uq_data_gaps_exchange_symbol_timeframe_gap_start",
        ),
        sa.CheckConstraint(
            "status IN ('open', 'repaired', 'empty', 'failed')", name="ck_data_gaps_status"
        ),
    )
    op.create_index("ix_data_gaps_status_gap_start", "data_gaps", ["status", "gap_start"])
    op.create_table(
        "series_stats",
        *_series(),
        sa.Column("candle_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("first_ts", EpochMs),
        sa.Column("last_ts", EpochMs),
        sa.Column("last_final_ts", EpochMs),
        sa.PrimaryKeyConstraint("exchange", "symbol", "timeframe", name="pk_series_stats"),
    )
    op.create_table(
        "empty_ranges",
        *_series(),
        sa.Column("range_start", EpochMs, nullable=False),
        sa.Column("range_end", EpochMs, nullable=False),
        sa.PrimaryKeyConstraint(
            "exchange", "symbol", "timeframe", "range_start", name="pk_empty_ranges"
        ),
    )
    op.create_table(
        "series_state",
        *_series(),
        sa.Column("detect_watermark", EpochMs),
        sa.Column("retention_horizon", EpochMs),
        sa.Column("detect_low", EpochMs),
        sa.PrimaryKeyConstraint("exchange", "symbol", "timeframe", name="pk_series_state"),
    )
    op.create_table(
        "rejected_candles",
        _id(),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text),
        sa.Column("timeframe", sa.Text),
        sa.Column("ts", EpochMs),
        sa.Column("raw", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("seen_at", EpochMs, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rejected_candles"),
    )


def downgrade() -> None:
    for table in (
        "rejected_candles",
        "series_state",
        "empty_ranges",
        "series_stats",
        "data_gaps",
        "ingestion_jobs",
        "candles",
    ):
        op.drop_table(table)
