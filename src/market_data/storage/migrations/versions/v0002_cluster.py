"""Several daemons on one database: members, leases, claimed work, and job owners.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from market_data.storage.dialect_time import EpochMs

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ingestion_jobs") as batch:
        batch.add_column(sa.Column("owner", sa.Text))
    op.create_index("ix_ingestion_jobs_owner_status", "ingestion_jobs", ["owner", "status"])
    op.create_table(
        "cluster_members",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("started_at", EpochMs, nullable=False),
        sa.Column("heartbeat_at", EpochMs, nullable=False),
        sa.Column("pid", sa.Integer),
        sa.Column("host", sa.Text),
        sa.Column("channels", sa.Integer, nullable=False, server_default="0"),
        sa.Column("jobs", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_cluster_members"),
    )
    op.create_table(
        "leases",
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("expires_at", EpochMs, nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", name="pk_leases"),
    )
    op.create_index("ix_leases_owner", "leases", ["owner"])
    op.create_table(
        "work_claims",
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False, server_default="open"),
        sa.Column("owner", sa.Text),
        sa.Column("expires_at", EpochMs),
        sa.Column("payload", sa.Text),
        sa.PrimaryKeyConstraint("kind", "key", name="pk_work_claims"),
        sa.CheckConstraint("state IN ('open', 'claimed', 'done')", name="ck_work_claims_state"),
    )
    op.create_index("ix_work_claims_owner", "work_claims", ["owner"])


def downgrade() -> None:
    for table in ("work_claims", "leases", "cluster_members"):
        op.drop_table(table)
    op.drop_index("ix_ingestion_jobs_owner_status", "ingestion_jobs")
    with op.batch_alter_table("ingestion_jobs") as batch:
        batch.drop_column("owner")
