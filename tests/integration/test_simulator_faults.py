"""Every fault switch of the simulator, over real sockets, with short durations."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from market_data.simulator import Faults
from market_data.simulator.pairs import PairSpec
from tests.integration.test_simulator_ws import BUSY, QUIET, frames_for, open_ws, recv, subscribe
from tests.plugins.sim import SimulatorFactory

STATUS = "/v2/platform/status"


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_rest_storm_bans_then_clears(simulator_factory: SimulatorFactory) -> None:
    sim = await simulator_factory()
    async with httpx.AsyncClient(base_url=sim.rest_url) as client:
        assert (await client.get(STATUS)).status_code == 200
        sim.start_rest_storm(0.3, ban=0.6)
        storm = await client.get(STATUS)
        assert storm.status_code == 429
        assert storm.json() == ["error", 11010, "ratelimit: error"]
        await asyncio.sleep(0.35)  # the storm is over, the ban is not
        assert (await client.get(STATUS)).status_code == 429
        await asyncio.sleep(0.4)
        assert (await client.get(STATUS)).status_code == 200
    assert sim.stats.rest_requests(outcome="storm") == 1
    assert sim.stats.rest_requests(outcome="banned") == 1
    assert sim.stats.faults_fired["rest_storm"] == 1


async def test_periodic_storms(simulator_factory: SimulatorFactory) -> None:
    sim = await simulator_factory(
        faults=Faults(rest_storm_every=0.2, rest_storm_duration=0.1, rest_storm_ban=0.0)
    )
    await wait_for(lambda: sim.stats.faults_fired["rest_storm"] >= 2, timeout=3)


async def test_5xx_and_slow_answers(simulator_factory: SimulatorFactory) -> None:
    sim = await simulator_factory()
    async with httpx.AsyncClient(base_url=sim.rest_url) as client:
        sim.set_faults(rest_error_rate=1.0)
        broken = await client.get(STATUS)
        assert broken.status_code in (502, 503, 504, 520)
        assert broken.headers["content-type"].startswith("text/html")
        sim.set_faults(rest_error_rate=0.5)
        statuses = {(await client.get(STATUS)).status_code for _ in range(30)}
        assert 200 in statuses
        assert len(statuses) >= 2
        sim.set_faults(rest_error_rate=0.0, rest_slow_rate=1.0, rest_slow_seconds=0.3)
        start = time.monotonic()
        assert (await client.get(STATUS)).status_code == 200
        assert time.monotonic() - start >= 0.3
    with pytest.raises(ValueError, match="unknown fault"):
        sim.set_faults(nope=1)


async def test_drop_after_n_messages_without_close_frame(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(faults=Faults(ws_drop_after=4), ws_heartbeat_seconds=0.1)
    ws = await open_ws(sim)
    await subscribe(ws, "trade:1m:tBTCUSD")  # info, ack, snapshot: 3 messages
    await recv(ws)  # the 4th, then the server aborts the TCP connection
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is None  # no close frame came
    assert sim.stats.faults_fired["ws_drop"] == 1


async def test_restart_20051_then_close(simulator_factory: SimulatorFactory) -> None:
    sim = await simulator_factory(ws_restart_close_seconds=0.5)
    async with await open_ws(sim) as ws:
        sim.set_faults(ws_restart_every=0.2)
        info = await recv(ws)
        noticed = time.monotonic()
        assert info["event"] == "info"
        assert info["code"] == 20051
        sim.set_faults(ws_restart_every=0.0)
        # The server lets the client go first: the connection still answers after the notice
        # (it was closed at the instant of the notice, racing the client's own close).
        await ws.send(json.dumps({"event": "ping", "cid": 7}))
        assert (await recv(ws))["event"] == "pong"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert time.monotonic() - noticed >= 0.45
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1012
    async with await open_ws(sim) as ws:
        await sim.restart_connections()
        assert (await recv(ws))["code"] == 20051
        await ws.close()  # a client that leaves at once is not kept waiting
    await wait_for(lambda: sim.stats.ws_active == 0)


async def test_restart_waits_a_few_seconds_by_default(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory()
    assert sim.config.ws_restart_close_seconds == 3.0
    async with await open_ws(sim) as ws:
        await sim.restart_connections()
        assert (await recv(ws))["code"] == 20051
        await asyncio.sleep(1.0)  # the behaviour under test is time: still open after 1 s
        await ws.send(json.dumps({"event": "ping", "cid": 1}))
        assert (await recv(ws))["event"] == "pong"


async def test_maintenance_pauses_then_asks_to_resubscribe(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(pairs=(BUSY,), speed=30.0, ws_heartbeat_seconds=0.2)
    async with await open_ws(sim) as ws:
        chan, _ = await subscribe(ws, "trade:1m:tBTCUSD")
        await sim.start_maintenance(1.5)
        frames = await frames_for(ws, 0.5)
        # An update already in flight may arrive before the notice; none may arrive after it.
        notice = next(i for i, f in enumerate(frames) if isinstance(f, dict))
        assert frames[notice]["code"] == 20060
        assert all(f == [chan, "hb"] for f in frames[notice + 1 :])  # heartbeats go on
        async with httpx.AsyncClient(base_url=sim.rest_url) as client:
            assert (await client.get(STATUS)).json() == [0]
        end = await recv(ws)
        while isinstance(end, list):
            end = await recv(ws)
        assert end["code"] == 20061
        assert await frames_for(ws, 0.4) == []  # the old channel is dead until resubscribed
        new_chan, snapshot = await subscribe(ws, "trade:1m:tBTCUSD")
        assert new_chan != chan
        assert snapshot
        assert any(isinstance(f, list) and f[0] == new_chan for f in await frames_for(ws, 0.5))
        async with httpx.AsyncClient(base_url=sim.rest_url) as client:
            assert (await client.get(STATUS)).json() == [1]


async def test_stall_silences_everything(simulator_factory: SimulatorFactory) -> None:
    sim = await simulator_factory(pairs=(QUIET,), ws_heartbeat_seconds=0.1)
    async with await open_ws(sim) as ws:
        chan, _ = await subscribe(ws, "trade:1m:tZRXUSD")
        assert await recv(ws) == [chan, "hb"]
        sim.start_stall(0.6)
        start = time.monotonic()
        first = await recv(ws)
        # a heartbeat already on its way may arrive; then silence until the stall ends
        if time.monotonic() - start < 0.05:
            first = await recv(ws)
        assert first == [chan, "hb"]
        assert time.monotonic() - start >= 0.55


async def test_lost_updates(simulator_factory: SimulatorFactory) -> None:
    sim = await simulator_factory(
        pairs=(BUSY,), speed=30.0, faults=Faults(ws_loss_rate=1.0), ws_heartbeat_seconds=0.2
    )
    async with await open_ws(sim) as ws:
        chan, _ = await subscribe(ws, "trade:1m:tBTCUSD")
        frames = await frames_for(ws, 0.8)
    assert frames
    assert all(f == [chan, "hb"] for f in frames)
    assert sim.stats.faults_fired["ws_update_lost"] > 3


async def test_firehose_pushes_changed_candles(simulator_factory: SimulatorFactory) -> None:
    sim = await simulator_factory(faults=Faults(firehose=True))
    async with connect(sim.ws_url) as ws:
        await recv(ws)
        chans = [(await subscribe(ws, f"trade:{tf}:tETHUSD"))[0] for tf in ("1m", "5m")]
        frames = [json.loads(await ws.recv()) for _ in range(2000)]
    updates = [f for f in frames if isinstance(f, list) and f[1] != "hb"]
    assert {f[0] for f in updates} == set(chans)
    per_chan = [[f[1] for f in updates if f[0] == chan] for chan in chans]
    for rows in per_chan:
        assert len(rows) > 100
        assert all(a != b for a, b in itertools.pairwise(rows))


async def test_faults_are_validated(simulator_factory: SimulatorFactory) -> None:
    with pytest.raises(ValueError, match="share"):
        await simulator_factory(faults=Faults(ws_loss_rate=2.0))
    sim = await simulator_factory(pairs=(PairSpec("BTCUSD", 1.0),))
    with pytest.raises(ValueError, match="negative"):
        sim.set_faults(ws_drop_after=-1)
