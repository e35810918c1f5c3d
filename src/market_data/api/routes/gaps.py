"""GET /gaps: recorded gaps, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from market_data.api.deps import OptionalSymbol, OptionalTimeframe, StoreDep
from market_data.api.schemas import GapOut, GapsOut
from market_data.models import Gap
from market_data.timeframes import count_periods

router = APIRouter(tags=["gaps"])


def _missing(gap: Gap) -> int | None:
    try:
        return count_periods(gap.gap_start, gap.gap_end, gap.timeframe)
    except ValueError:
        return None


@router.get("/gaps", response_model=GapsOut)
async def list_gaps(
    store: StoreDep,
    symbol: OptionalSymbol,
    timeframe: OptionalTimeframe,
    repaired: Annotated[
        bool | None,
        Query(description="true: closed gaps (repaired or empty); false: still open or failing"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> GapsOut:
    gaps = await store.list_gaps(repaired=repaired, symbol=symbol, timeframe=timeframe, limit=limit)
    return GapsOut(count=len(gaps), gaps=[GapOut.of(g, _missing(g)) for g in gaps])
