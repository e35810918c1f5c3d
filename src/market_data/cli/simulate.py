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
from market_data.simulator.exchange import DEFAULT_EXCHANGE_PAIR_COUNT, exchange_pairs
from market_data.simulator.pairs import DEFAULT_PAIRS, pairs_by_name

MARKETS = ("default", "exchange")
# The exchange market's pair list changes this often unless told otherwise.
DEFAULT_CHURN_MINUTES = 60.0


async def _serve(config: SimulatorConfig) -> None:
    async with run_simulator(config) as sim:
        listed = sim.market.exchange_pairs()
        if len(listed) <= 12:
            pairs = ", ".join(listed)
        else:
            pairs = f"{len(listed)} pairs ({', '.join(listed[:6])}, ...)"
        typer.echo(f"Bitfinex simulator (seed {config.seed}) serving {pairs}")
        if config.churn_minutes:
            typer.echo(
                f"one pair listed and one delisted every {config.churn_minutes:g} market minutes"
            )
        typer.echo(f"REST       {sim.rest_url}")
        typer.echo(f"WebSocket  {sim.ws_url}")
        typer.echo(f"export BITFINEX_REST_URL={sim.rest_url} BITFINEX_WS_URL={sim.ws_url}")
        typer.echo("Press Ctrl-C to stop.")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        typer.echo(
            f"stopped; served {sim.stats.rest_requests()} REST requests and "
            f"{sim.stats.ws_opened} WebSocket connections"
        )


def simulate(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for REST and WebSocket (0: any free).")] = 8200,
    seed: Annotated[int, typer.Option(help="Seed of the market: same seed, same candles.")] = 1,
    pairs: Annotated[
        str,
        typer.Option(
            help="Comma-separated pairs (default: " + ",".join(p.pair for p in DEFAULT_PAIRS) + ")."
        ),
    ] = "",
    market: Annotated[
        str,
        typer.Option(
            help="default: the pairs above; exchange: a whole exchange drawn from the "
            "seed (long-tail activity, colon and test pairs, listings over the history, "
            "pairs listed and delisted while it runs)."
        ),
    ] = "default",
    pair_count: Annotated[
        int, typer.Option(help="Pairs of the exchange market, test pairs included.")
    ] = DEFAULT_EXCHANGE_PAIR_COUNT,
    churn_minutes: Annotated[
        float | None,
        typer.Option(
            help="Every this many market minutes one pair is listed and one delisted "
            f"(0: never; default {DEFAULT_CHURN_MINUTES:g} for the exchange market, "
            "0 otherwise)."
        ),
    ] = None,
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
    restart_close_seconds: Annotated[
        float, typer.Option(help="Seconds from a 20051 notice to closing the connections.")
    ] = 3.0,
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
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s - %(message)s", datefmt="%Y-%m-%d %H:%M:%S"
    )
    faults = Faults(
        rest_storm_every=storm_every,
        rest_storm_duration=storm_duration,
        rest_storm_ban=storm_ban,
        rest_error_rate=error_rate,
        rest_slow_rate=slow_rate,
        rest_slow_seconds=slow_seconds,
        ws_drop_after=drop_after,
        ws_restart_every=restart_every,
        ws_maintenance_every=maintenance_every,
        ws_maintenance_duration=maintenance_duration,
        ws_stall_every=stall_every,
        ws_stall_duration=stall_duration,
        ws_loss_rate=loss_rate,
        firehose=firehose,
    )
    if market not in MARKETS:
        exit_with_error(f"--market must be one of {', '.join(MARKETS)}", code=EXIT_USAGE)
    if market == "exchange" and pairs:
        exit_with_error(
            "--pairs is for the default market; the exchange market draws its own (--pair-count)",
            code=EXIT_USAGE,
        )
    try:
        if market == "exchange":
            chosen = exchange_pairs(seed, pair_count, history_days)
            churn = DEFAULT_CHURN_MINUTES if churn_minutes is None else churn_minutes
        else:
            chosen = pairs_by_name([p for p in pairs.split(",") if p.strip()]) or DEFAULT_PAIRS
            churn = churn_minutes or 0.0
        config = SimulatorConfig(
            host=host,
            port=port,
            seed=seed,
            pairs=chosen,
            speed=speed,
            churn_minutes=churn,
            history_days=history_days,
            rest_rate_limit=rate_limit,
            rest_ban_seconds=ban_seconds,
            ws_connection_limit=ws_connection_limit,
            ws_channel_limit=channel_limit,
            ws_heartbeat_seconds=heartbeat,
            ws_restart_close_seconds=restart_close_seconds,
            faults=faults,
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
