"""DATABASE_URL handling and candle-batch preparation: pure functions."""

from __future__ import annotations

import math

import pytest

from market_data.dburl import describe_target, normalize_database_url, safe_database_url
from market_data.models import Candle
from market_data.storage.batches import prepare


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///./market_data.db", "sqlite+aiosqlite:///./market_data.db"),
        ("sqlite:////var/lib/md/x.db", "sqlite+aiosqlite:////var/lib/md/x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u:p@h:5433/db", "postgresql+asyncpg://u:p@h:5433/db"),
        ("postgres://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+psycopg://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("postgresql://u:p%40ss@h/db", "postgresql+asyncpg://u:p%40ss@h/db"),
        ("postgresql://u@h/db?sslmode=require", "postgresql+asyncpg://u@h/db?ssl=require"),
    ],
)
def test_normalize(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


@pytest.mark.parametrize(
    "bad", ["mysql://u:p@h/db", "sqlite://", "sqlite:///:memory:", "postgresql://u@h", "nonsense"]
)
def test_normalize_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="sqlite:///PATH"):
        normalize_database_url(bad)


def test_safe_url_and_target_hide_the_password() -> None:
    url = "postgresql://trader:s3cr%40t@db.example:6543/market"
    assert safe_database_url(url) == "postgresql://trader:***@db.example:6543/market"
    assert describe_target(url) == "db.example:6543/market"
    assert describe_target("postgres://u:pw@h/db") == "h:5432/db"
    assert describe_target("sqlite:///./data/md.db") == "./data/md.db"
    assert "s3cr" not in safe_database_url(url) + describe_target(url)


def c(ts: int, price: float = 1.0, final: bool = True, symbol: str = "BTCUSD") -> Candle:
    return Candle(symbol, "1m", ts * 60_000, price, price + 1, price - 1, price, 2.0, final)


def test_prepare_groups_dedupes_and_sorts() -> None:
    batches, rejected = prepare(
        [c(3), c(1, 5.0), c(2, symbol="ETHUSD"), c(1, 6.0), c(2), c(4, final=False), c(4, 9.0)],
        "bitfinex",
    )
    assert rejected == []
    assert [(b.symbol, [r[3] // 60_000 for r in b.rows]) for b in batches] == [
        ("BTCUSD", [1, 2, 3, 4]),
        ("ETHUSD", [2]),
    ]
    btc = batches[0]
    assert btc.rows[0] == ("bitfinex", "BTCUSD", "1m", 60_000, 6.0, 7.0, 5.0, 6.0, 2.0, True)
    assert btc.rows[3][4] == 9.0  # the last row for a key wins...
    assert (btc.first_ts, btc.last_ts, btc.last_final_ts) == (60_000, 240_000, 240_000)
    kept, _ = prepare([c(1, 1.0), c(1, 2.0, final=False)], "bitfinex")
    assert kept[0].rows[0][4] == 1.0  # ...but a non-final never displaces a final
    assert [len(x.rows) for x in btc.chunks(3)] == [3, 1]
    unusual, _ = prepare([Candle("BTCUSD", "1M", 0, 1, 2, 1, 1, 0, final=True)], "bitfinex")
    assert unusual[0].rows == [("bitfinex", "BTCUSD", "1M", 0, 1.0, 2.0, 1.0, 1.0, 0.0, True)]
    assert all(type(v) is float for v in unusual[0].rows[0][4:9])


def test_prepare_rejects_exactly_what_candle_problem_rejects() -> None:
    odd = [
        Candle("BTCUSD", "1m", 60_000, 1, 2, 1, 1, 0),  # ints are fine
        Candle("BTCUSD", "1m", 120_000, True, 2, 1, 1, 0),  # bools are not
        Candle("BTCUSD", "1m", 180_000, 1.0, 2.0, 1.0, 1.0, -0.0),
        Candle("BTCUSD", "1m", 240_000, 1.0, 2.0, 1.0, math.nan, 1.0),
        Candle("BTCUSD", "1m", -60_000, 1.0, 2.0, 1.0, 1.0, 1.0),
        Candle("BTCUSD", "1w", 4 * 86_400_000, 1.0, 2.0, 1.0, 1.0, 1.0),  # a Monday
        Candle("BTCUSD", "1w", 0, 1.0, 2.0, 1.0, 1.0, 1.0),  # a Thursday
        Candle("BTCUSD", "1M", 2_678_400_000, 1.0, 2.0, 1.0, 1.0, 1.0),  # 1970-02-01
        Candle("BTCUSD", "1M", 86_400_000, 1.0, 2.0, 1.0, 1.0, 1.0),
        Candle("BTCUSD", "bad", 0, 1.0, 2.0, 1.0, 1.0, 1.0),
        Candle("BTCUSD", "1m", 60_000.0, 1.0, 2.0, 1.0, 1.0, 1.0),  # type: ignore[arg-type]
        Candle("BTCUSD", "1m", 300_000, "1", 2.0, 1.0, 1.0, 1.0),  # type: ignore[arg-type]
    ]
    batches, rejected = prepare(odd, "bitfinex")
    refused = {id(r.candle) for r in rejected}
    for candle in odd:
        try:
            problem = candle.problem()
        except ValueError:
            problem = "raises"
        assert (id(candle) in refused) == (problem is not None), candle
    assert sum(len(b.rows) for b in batches) + len(rejected) == len(odd)


def test_fast_epoch_ms_to_datetime_is_exact() -> None:
    import random
    from datetime import UTC, datetime

    from market_data.storage.dialect_time import datetime_to_ms, ms_to_datetime

    rng = random.Random(5)
    for ms in [0, 1, 999, 1_700_000_000_123, 4_102_444_800_000 - 1] + [
        rng.randrange(0, 4_102_444_800_000) for _ in range(20_000)
    ]:
        fast = datetime.fromtimestamp(ms / 1000, UTC)
        assert fast == ms_to_datetime(ms)
        assert datetime_to_ms(fast) == ms


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("postgresql://u:p@127.0.0.1:99999/db", "port 99999 is out of range"),
        ("postgresql://u:p@h:0/db", "port 0 is out of range"),
        ("postgresql://u:p@h:http/db", "port is not a number"),
        ("postgresql://u:p@bad host/db", "host 'bad host'"),
        ("postgresql://u:p@-h/db", "host '-h'"),
        ("postgresql://u:p@h/a/b", "database name 'a/b'"),
        (f"postgresql://u:p@h/{'d' * 64}", "at most 63 bytes"),
        ("postgresql://u:p@h/d\x01b", "control characters"),
        ("postgresql://u\x07:p@h/db", "control characters"),
        ("sqlite:///x\x00.db", "control characters"),
    ],
)
def test_every_part_is_checked(bad: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        normalize_database_url(bad)


@pytest.mark.parametrize(
    "good",
    [
        "postgresql://u:p@[::1]:5432/db",
        "postgresql://u:p@127.0.0.1:65535/db",
        "postgresql://u:p@db_1.internal:1/db",
        "postgresql://u:p@localhost./db",
        "postgresql:///db?host=/run/postgresql",
        f"postgresql://u:p@h/{'d' * 63}",
    ],
)
def test_valid_parts_pass(good: str) -> None:
    assert normalize_database_url(good).startswith("postgresql+asyncpg://")


def test_masking_works_on_urls_too_broken_to_parse() -> None:
    assert safe_database_url("postgresql://u:s3cr@t@h:abc/db") == "postgresql://u:***@h:abc/db"
    assert safe_database_url("postgresql://u:s3cret@h:abc/db") == "postgresql://u:***@h:abc/db"
