"""`market-data simulate --market exchange` as a user runs it: its own process, its usage errors."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from market_data.simulator import exchange_pairs

PAIR_LIST = "/v2/conf/pub:list:pair:exchange"


@pytest.fixture
def exchange_process() -> Iterator[str]:
    """`market-data simulate --market exchange` in its own process; yields its REST URL."""
    args = [
        sys.executable,
        "-m",
        "market_data",
        "simulate",
        "--port",
        "0",
        "--market",
        "exchange",
        "--pair-count",
        "80",
        "--seed",
        "4",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(3)]
        assert "80 pairs" in banner[0], banner
        assert "every 60 market minutes" in banner[1], banner
        match = re.match(r"REST\s+(\S+)", banner[2])
        assert match, banner
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(10)


async def test_simulate_command_serves_an_exchange(exchange_process: str) -> None:
    async with httpx.AsyncClient(base_url=exchange_process, timeout=10) as client:
        body = (await client.get(PAIR_LIST)).json()
    assert body == [[spec.pair for spec in exchange_pairs(4, 80)]]


@pytest.mark.parametrize(
    "args",
    [
        ("--market", "nope"),
        ("--market", "exchange", "--pairs", "BTCUSD"),
        ("--pair-count", "0", "--market", "exchange"),
    ],
)
def test_simulate_command_refuses_bad_market_usage(args: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "market_data", "simulate", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ")
