"""The simulator's server: REST and WebSocket on one loopback port, plus the fault scheduler.

One `websockets` server listens; its `process_request` hook answers plain HTTP requests (the
REST endpoints) itself and refuses WebSocket handshakes over the connection limit with 429, so
`/ws/2` and `/v2/...` share a port as `rest_url` and `ws_url` show. Every HTTP answer closes its
connection (`Connection: close`), which httpx and curl handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from random import Random

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from market_data.simulator.config import SimContext, SimulatorConfig, logger, scaled_clock
from market_data.simulator.corrupt import corrupt_rows, dumps_rows
from market_data.simulator.faults import Faults, FaultState
from market_data.simulator.hub import Hub
from market_data.simulator.limits import RollingLimit
from market_data.simulator.market import Market
from market_data.simulator.prices import hash64
from market_data.simulator.rest import RestAnswer, answer, endpoint_of
from market_data.simulator.stats import SimStats
from market_data.simulator.wire import error_body
from market_data.simulator.ws import INFO_MAINTENANCE, INFO_MAINTENANCE_END, INFO_RESTART, Session

_TICK_SECONDS = 0.02
_PROXY_ERRORS = (502, 503, 504, 520)
_RATE_LIMITED = error_body(11010, "ratelimit: error")


class Simulator:
    """A running simulator. Build it with `run_simulator(config)`."""

    def __init__(self, config: SimulatorConfig) -> None:
        config.validate()
        self.config = config
        clock = config.clock or scaled_clock(config.speed)
        self.market = Market(
            config.seed,
            config.pairs,
            clock=clock,
            history_days=config.history_days,
            churn_minutes=config.churn_minutes,
        )
        self.faults: Faults = config.faults
        self.stats = SimStats()
        self.state = FaultState()
        self._ctx = SimContext(
            config,
            self.market,
            self.faults,
            self.stats,
            self.state,
            Random(hash64(config.seed, "faults")),
        )
        self._hub = Hub(self._ctx)
        self._rest_limit = RollingLimit(
            config.rest_rate_limit, config.rest_rate_window, config.rest_ban_seconds
        )
        self._ws_limit = RollingLimit(config.ws_connection_limit, config.ws_connection_window)
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._periodic: dict[str, tuple[float, float]] = {}
        self._in_maintenance = False
        self.host = config.host
        self.port = config.port

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws/2"

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        transport_logger = logging.getLogger("market_data.simulator.transport")
        # websockets logs every HTTP answer at INFO; REST traffic would drown the fault log.
        if transport_logger.level == logging.NOTSET:
            transport_logger.setLevel(logging.WARNING)
        self._server = await serve(
            self._session,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            ping_interval=None,
            max_size=1 << 16,
            logger=transport_logger,
        )
        sockname = next(iter(self._server.sockets)).getsockname()
        self.port = int(sockname[1])
        self._ticker = asyncio.create_task(self._tick_faults(), name="sim-faults")

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        await self._hub.close()

    # ---- faults you can trigger ---------------------------------------------------------------

    def set_faults(self, **changes: float | int | bool) -> None:
        """Set fault switches by name (`sim.set_faults(ws_loss_rate=0.1)`)."""
        self.faults.update(**changes)

    def start_rest_storm(self, duration: float, ban: float | None = None) -> None:
        """From now on for `duration` seconds, every REST request gets 429 and its client a ban."""
        if ban is not None:
            self.faults.rest_storm_ban = ban
        self.state.storm_until = time.monotonic() + duration
        self._fired("rest_storm", "REST 429 storm for %.1fs", duration)

    def start_stall(self, duration: float) -> None:
        """Silence every WebSocket channel (no data, no heartbeats) for `duration` seconds."""
        self.state.stall_until = time.monotonic() + duration
        self._fired("ws_stall", "WebSocket stall for %.1fs", duration)

    async def start_maintenance(self, duration: float) -> None:
        """Info 20060 now, platform status 0, no updates, then 20061 after `duration` seconds."""
        self.state.maintenance_until = time.monotonic() + duration
        self._in_maintenance = True
        self._fired("ws_maintenance", "maintenance for %.1fs (20060)", duration)
        await self._hub.broadcast(INFO_MAINTENANCE)

    async def restart_connections(self) -> None:
        """Info 20051 to every WebSocket client, then close them all (1012) after
        `ws_restart_close_seconds`, as a server going away does."""
        self._fired(
            "ws_restart", "WebSocket restart (20051) of %d connections", len(self._hub.sessions)
        )
        await self._hub.broadcast(
            INFO_RESTART, close_code=1012, close_after=self.config.ws_restart_close_seconds
        )

    def _fired(self, name: str, message: str, *args: object) -> None:
        self.stats.faults_fired[name] += 1
        logger.warning("simulator fault: " + message, *args)

    async def _tick_faults(self) -> None:
        periodic: tuple[tuple[str, Callable[[], float], Callable[[], object]], ...] = (
            (
                "rest_storm",
                lambda: self.faults.rest_storm_every,
                lambda: self.start_rest_storm(self.faults.rest_storm_duration),
            ),
            (
                "ws_stall",
                lambda: self.faults.ws_stall_every,
                lambda: self.start_stall(self.faults.ws_stall_duration),
            ),
            (
                "ws_maintenance",
                lambda: self.faults.ws_maintenance_every,
                lambda: self.start_maintenance(self.faults.ws_maintenance_duration),
            ),
            ("ws_restart", lambda: self.faults.ws_restart_every, self.restart_connections),
        )
        while True:
            now = time.monotonic()
            for name, every_of, fire in periodic:
                every = every_of()
                seen, due = self._periodic.get(name, (0.0, 0.0))
                if every != seen:
                    self._periodic[name] = (every, now + every)
                elif every > 0 and now >= due:
                    self._periodic[name] = (every, now + every)
                    result = fire()
                    if asyncio.iscoroutine(result):
                        await result
            if self._in_maintenance and not self.state.maintenance(now):
                self._in_maintenance = False
                self._hub.mark_all_stale()
                logger.warning("simulator fault: maintenance over (20061)")
                await self._hub.broadcast(INFO_MAINTENANCE_END)
            await asyncio.sleep(_TICK_SECONDS)

    # ---- connections ------------------------------------------------------------------------

    async def _session(self, connection: ServerConnection) -> None:
        await Session(self._ctx, self._hub, connection).run()

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        peer = str(connection.remote_address[0])
        if request.path.split("?", 1)[0].startswith("/ws"):
            if not self._ws_limit.admit(peer):
                self.stats.ws_refused += 1
                return _response(429, _RATE_LIMITED)
            return None
        result = await self._rest(peer, request.path)
        self.stats.record_rest(
            endpoint_of(request.path), result.outcome, result.status, peer, request.path
        )
        return _response(
            result.status, result.body, "text/html" if result.outcome == "server_error" else None
        )

    async def _rest(self, peer: str, target: str) -> RestAnswer:
        faults, rng = self.faults, self._ctx.rng
        if self._rest_limit.banned(peer):
            return RestAnswer(429, _RATE_LIMITED, "banned")
        if self.state.storm(time.monotonic()):
            self._rest_limit.ban(peer, faults.rest_storm_ban)
            return RestAnswer(429, _RATE_LIMITED, "storm")
        if not self._rest_limit.admit(peer):
            logger.warning(
                "simulator: REST client %s over the rate limit, banned for %.0fs",
                peer,
                self.config.rest_ban_seconds,
            )
            return RestAnswer(429, _RATE_LIMITED, "rate_limited")
        if faults.rest_slow_rate and rng.random() < faults.rest_slow_rate:
            self._fired("rest_slow", "slow REST answer (%.2fs)", faults.rest_slow_seconds)
            await asyncio.sleep(faults.rest_slow_seconds)
        if faults.rest_error_rate and rng.random() < faults.rest_error_rate:
            status = rng.choice(_PROXY_ERRORS)
            self._fired("rest_5xx", "REST answer %d", status)
            html = f"<html><body><h1>{status} Server Error</h1></body></html>"
            return RestAnswer(status, html, "server_error")
        result = answer(self.market, target, self.state.maintenance(time.monotonic()))
        if (
            faults.rest_corrupt_rate
            and result.status == 200
            and endpoint_of(target.split("?", 1)[0]) == "candles_hist"
        ):
            result = self._corrupt(result)
        return result

    def _corrupt(self, result: RestAnswer) -> RestAnswer:
        rows = json.loads(result.body)
        broken, kinds = corrupt_rows(rows, self.faults.rest_corrupt_rate, self._ctx.rng)
        for kind in kinds:
            self.stats.faults_fired["rest_corrupt_row"] += 1
            self.stats.faults_fired[f"corrupt_{kind}"] += 1
        return RestAnswer(result.status, dumps_rows(broken), result.outcome)


def _response(status: int, body: str, content_type: str | None = None) -> Response:
    data = body.encode()
    headers = Headers(
        [
            ("Content-Type", content_type or "application/json; charset=utf-8"),
            ("Content-Length", str(len(data))),
            ("Connection", "close"),
        ]
    )
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return Response(status, reason, headers, data)


@asynccontextmanager
async def run_simulator(config: SimulatorConfig | None = None) -> AsyncIterator[Simulator]:
    """`async with run_simulator(SimulatorConfig(...)) as sim:` a running simulator."""
    sim = Simulator(config or SimulatorConfig())
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()
