"""`market-data simulate`: run the Bitfinex simulator on loopback until Ctrl-C.

Exit codes: 0 stopped by Ctrl-C or SIGTERM, 1 the port could not be opened, 2 bad usage.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated

import typer

from market_data.cli.common import EXIT_USAGE, exit_with_error, run_async
from market_data.simulator import Faults, SimulatorConfig, run_simulator
from market_data.simulator.pairs import DEFAULT_PAIRS, pairs_by_name


async def _serve(config: SimulatorConfig) -> None:
    async with run_simulator(config) as sim:
        pairs = ", ".join(sim.market.exchange_pairs())
        typer.echo(f"Bitfinex simulator (seed {config.seed}) serving {pairs}")
        typer.echo(f"REST       {sim.rest_url}")
        typer.echo(f"WebSocket  {sim.ws_url}")
        typer.echo(f"export BITFINEX_REST_URL={sim.rest_url} BITFINEX_WS_URL={sim.ws_url}")
        typer.echo("Press Ctrl-C to stop.")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        typer.echo(f"stopped; served {sim.stats.rest_requests()} REST requests and "
                   f"{sim.stats.ws_opened} WebSocket connections")


def simulate(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for REST and WebSocket (0: any free).")] = 8200,
    seed: Annotated[int, typer.Option(help="Seed of the market: same seed, same candles.")] = 1,
    pairs: Annotated[
        str,
        typer.Option(help="Comma-separated pairs (default: "
                     + ",".join(p.pair for p in DEFAULT_PAIRS) + ")."),
    ] = "",
    speed: Annotated[float, typer.Option(help="Market time runs this many times faster.")] = 1.0,
    history_days: Annotated[float, typer.Option(help="Days of history before start.")] = 400.0,
    rate_limit: Annotated[int, typer.Option(help="REST requests per minute per IP (0: off).")] = 30,
    ban_seconds: Annotated[float, typer.Option(help="Ban after going over the limit.")] = 60.0,
    ws_connection_limit: Annotated[
        int, typer.Option(help="New WebSocket connections per minute per IP (0: off).")
    ] = 20,
    channel_limit: Annotated[int, typer.Option(help="Channels per WebSocket connection.")] = 25,
    heartbeat: Annotated[float, typer.Option(help="Seconds of silence before a heartbeat.")] = 15.0,
    storm_every: Annotated[float, typer.Option(help="Seconds between REST 429 storms.")] = 0.0,
    storm_duration: Annotated[float, typer.Option(help="Length of each 429 storm.")] = 0.0,
    storm_ban: Annotated[float, typer.Option(help="Ban for clients calling in a storm.")] = 5.0,
    error_rate: Annotated[float, typer.Option(help="Share of REST answers that are 5xx.")] = 0.0,
    slow_rate: Annotated[float, typer.Option(help="Share of REST answers delayed.")] = 0.0,
    slow_seconds: Annotated[float, typer.Option(help="Delay of a slow answer.")] = 0.0,
    drop_after: Annotated[
        int, typer.Option(help="Abort each WebSocket after N messages (0: off).")
    ] = 0,
    restart_every: Annotated[float, typer.Option(help="Seconds between 20051 restarts.")] = 0.0,
    maintenance_every: Annotated[float, typer.Option(help="Seconds between maintenances.")] = 0.0,
    maintenance_duration: Annotated[float, typer.Option(help="Length of maintenance.")] = 0.0,
    stall_every: Annotated[float, typer.Option(help="Seconds between silent stalls.")] = 0.0,
    stall_duration: Annotated[float, typer.Option(help="Length of each stall.")] = 0.0,
    loss_rate: Annotated[float, typer.Option(help="Share of WebSocket updates lost.")] = 0.0,
    firehose: Annotated[
        bool, typer.Option(help="Push changed candles on every channel as fast as possible.")
    ] = False,
) -> None:
    """Run the Bitfinex simulator (REST and WebSocket on one port) until Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S")
    faults = Faults(
        rest_storm_every=storm_every, rest_storm_duration=storm_duration, rest_storm_ban=storm_ban,
        rest_error_rate=error_rate, rest_slow_rate=slow_rate, rest_slow_seconds=slow_seconds,
        ws_drop_after=drop_after, ws_restart_every=restart_every,
        ws_maintenance_every=maintenance_every, ws_maintenance_duration=maintenance_duration,
        ws_stall_every=stall_every, ws_stall_duration=stall_duration, ws_loss_rate=loss_rate,
        firehose=firehose,
    )
    try:
        chosen = pairs_by_name([p for p in pairs.split(",") if p.strip()]) if pairs else None
        config = SimulatorConfig(
            host=host, port=port, seed=seed, pairs=chosen or DEFAULT_PAIRS, speed=speed,
            history_days=history_days, rest_rate_limit=rate_limit, rest_ban_seconds=ban_seconds,
            ws_connection_limit=ws_connection_limit, ws_channel_limit=channel_limit,
            ws_heartbeat_seconds=heartbeat, faults=faults,
        )
        config.validate()
    except ValueError as exc:  # SymbolError included
        exit_with_error(str(exc), code=EXIT_USAGE)
    try:
        run_async(_serve(config))
    except OSError as exc:
        exit_with_error(f"cannot listen on {host}:{port}: {exc}")


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
