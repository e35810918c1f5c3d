"""The API's read gate: a fixed number of reads at once, a bounded line, a bounded wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse

from market_data.api.read_gate import ReadGate, ReadsBusy, read_permit


async def _hold(gate: ReadGate, entered: asyncio.Event, release: asyncio.Event) -> None:
    async with gate.permit():
        entered.set()
        await release.wait()


async def test_runs_up_to_the_bound_then_queues_then_refuses() -> None:
    gate = ReadGate(concurrency=2, waiting=1, max_wait_s=60)
    release = asyncio.Event()
    entered = [asyncio.Event() for _ in range(3)]
    holders = [asyncio.create_task(_hold(gate, e, release)) for e in entered]
    await entered[0].wait()
    await entered[1].wait()
    while gate.stats.waiting < 1:  # the third is in line
        await asyncio.sleep(0)
    assert not entered[2].is_set()
    assert (gate.stats.running, gate.stats.waiting) == (2, 1)
    with pytest.raises(ReadsBusy):  # the line is full: refused at once
        async with gate.permit():
            pass
    assert gate.stats.refused == 1
    release.set()
    await asyncio.gather(*holders)
    assert entered[2].is_set()
    assert (gate.stats.running, gate.stats.waiting, gate.stats.admitted) == (0, 0, 3)


async def test_a_wait_past_the_bound_is_refused_and_frees_its_place() -> None:
    gate = ReadGate(concurrency=1, waiting=1, max_wait_s=0.01)
    entered, release = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(_hold(gate, entered, release))
    await entered.wait()
    with pytest.raises(ReadsBusy):
        async with gate.permit():
            pass
    assert (gate.stats.waiting, gate.stats.refused) == (0, 1)
    release.set()
    await holder
    async with gate.permit():  # the slot came back
        assert gate.stats.running == 1


async def test_a_failing_read_gives_its_slot_back() -> None:
    gate = ReadGate(concurrency=1, waiting=0, max_wait_s=1)
    with pytest.raises(RuntimeError):
        async with gate.permit():
            raise RuntimeError("boom")
    async with gate.permit():
        assert gate.stats.running == 1


async def test_the_permit_covers_a_streamed_body_and_refusals_carry_retry_after() -> None:
    """A route under ReadPermit keeps its slot until its body is sent (the /candles route may
    stream), and a request past the bound gets 503 with Retry-After from FastAPI."""
    gate = ReadGate(concurrency=1, waiting=0, max_wait_s=1)
    seen_running: list[int] = []
    app = FastAPI()
    app.state.read_gate = gate

    @app.get("/rows", dependencies=[Depends(read_permit)])
    async def rows() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(3):
                seen_running.append(gate.stats.running)
                yield b"row\n"

        return StreamingResponse(body())

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        response = await client.get("/rows")
        assert response.text == "row\n" * 3
        assert seen_running == [1, 1, 1]
        assert gate.stats.running == 0
        async with gate.permit():  # the one slot is taken: the next request is refused
            refused = await client.get("/rows")
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert "retry" in refused.json()["detail"]
