"""A Bitfinex stand-in on loopback: a deterministic market behind real REST and WebSocket servers.

    async with run_simulator(SimulatorConfig(seed=7)) as sim:
        sim.rest_url, sim.ws_url, sim.market.truth(...), sim.faults, sim.stats

A whole exchange instead of a few pairs: `SimulatorConfig(pairs=exchange_pairs(seed, 300),
churn_minutes=60)`; tests list and delist with `sim.market.list_pair` / `delist_pair`.
"""

from market_data.simulator.config import SimulatorConfig
from market_data.simulator.exchange import exchange_pairs
from market_data.simulator.faults import Faults
from market_data.simulator.market import Market
from market_data.simulator.pairs import COLON_PAIR, DEFAULT_PAIRS, NEW_PAIR, THIN_PAIR, PairSpec
from market_data.simulator.server import Simulator, run_simulator

__all__ = [
    "COLON_PAIR",
    "DEFAULT_PAIRS",
    "NEW_PAIR",
    "THIN_PAIR",
    "Faults",
    "Market",
    "PairSpec",
    "Simulator",
    "SimulatorConfig",
    "exchange_pairs",
    "run_simulator",
]
