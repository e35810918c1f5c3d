"""GET /jobs: ingestion jobs, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from market_data.api.deps import OptionalSymbol, StoreDep
from market_data.api.schemas import JobOut, JobsOut
from market_data.models import JobStatus, JobType

router = APIRouter(tags=["jobs"])


@router.get("/jobs", response_model=JobsOut)
async def list_jobs(
    store: StoreDep,
    symbol: OptionalSymbol,
    job_type: JobType | None = None,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> JobsOut:
    jobs = await store.list_jobs(
        limit=limit,
        job_type=None if job_type is None else job_type.value,
        status=None if status is None else status.value,
        symbol=symbol,
    )
    return JobsOut(count=len(jobs), jobs=[JobOut.of(j) for j in jobs])
