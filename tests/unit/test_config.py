"""Settings: the contract's defaults, sources and their order, validation, secrets, series."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from market_data.config import Settings, load_settings
from market_data.errors import ConfigError
from market_data.models import SeriesKey
from market_data.timeframes import DAY_MS

CONTRACT_DEFAULTS = {
    "DATABASE_URL": "sqlite:///./market_data.db",
    "BITFINEX_SYMBOLS": ["BTCUSD", "ETHUSD", "SOLUSD"],
    "BITFINEX_TIMEFRAMES": ["1h", "4h", "1d"],
    "BACKFILL_ON_STARTUP": True,
    "BACKFILL_DAYS": 365,
    "GAP_REPAIR_INTERVAL_MINUTES": 60,
    "GAP_DETECTION_INTERVAL_MINUTES": 60,
    "GAP_REPAIR_MAX_REPAIRS_PER_RUN": 10,
    "GAP_DETECTION_MAX_OPEN_GAPS": 0,
    "REST_UPDATE_ENABLED": False,
    "UPDATE_INTERVAL_SECONDS": 60,
    "RETENTION_1M": 30,
    "RETENTION_1H": 365,
    "RETENTION_4H": 730,
    "RETENTION_1D": 1825,
    "WS_INGESTION_ENABLED": True,
    "WS_CATCHUP_LOOKBACK_MINUTES": 180,
    "WS_MAX_SUBSCRIPTIONS_PER_CONNECTION": 25,
    "WS_SAVE_BATCH_SIZE": 200,
    "WS_SAVE_FLUSH_SECONDS": 2.0,
    "WS_RECONNECT_INITIAL_BACKOFF": 1.0,
    "WS_RECONNECT_MAX_BACKOFF": 60.0,
    "WS_HEARTBEAT_TIMEOUT_SECONDS": 30,
    "RATE_LIMIT_DELAY": 6.0,
    "RATE_LIMIT_MAX_RETRIES": 10,
    "RATE_LIMIT_INITIAL_BACKOFF": 2.0,
    "RATE_LIMIT_MIN_BACKOFF_SECONDS": 60.0,
    "RATE_LIMIT_MAX_BACKOFF": 120.0,
    "BITFINEX_REST_URL": "https://api-pub.bitfinex.com",
    "BITFINEX_WS_URL": "wss://api-pub.bitfinex.com/ws/2",
    "CLEANUP_INITIAL_DELAY_MINUTES": 60,
    "CLEANUP_INTERVAL_HOURS": 24,
    "API_HOST": "127.0.0.1",
    "API_PORT": 8100,
    "API_TOKEN": None,
    "API_ALLOWED_HOSTS": ["127.0.0.1", "localhost", "[::1]"],
    "LOG_LEVEL": "INFO",
    "LOG_FORMAT": "text",
    # CONTRACT section 9 (DAEMON_ID's default, host name and PID, is checked on its own)
    "LEASE_TTL_SECONDS": 30,
    "BITFINEX_SOURCE_ADDRESS": None,
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the machine running the tests; cwd has no .env."""
    names = {name.upper() for name in Settings.model_fields}
    for key in list(os.environ):
        if key.upper() in names or key.upper().startswith("RETENTION_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def load(**env: str) -> Settings:
    for key, value in env.items():
        os.environ[key] = value
    try:
        return load_settings(env_file=None)
    finally:
        for key in env:
            del os.environ[key]


def config_error(**env: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(**env)
    return caught.value


def test_defaults_equal_the_contract() -> None:
    shown = load_settings(env_file=None).masked_dict()
    assert shown.pop("DAEMON_ID") == f"{socket.gethostname().split('.')[0]}-{os.getpid()}"
    assert shown == CONTRACT_DEFAULTS


def test_cluster_settings() -> None:
    settings = load(
        DAEMON_ID="node-1.eu", LEASE_TTL_SECONDS="12", BITFINEX_SOURCE_ADDRESS=" 10.0.0.7 "
    )
    assert settings.daemon_id == "node-1.eu"
    assert settings.lease_ttl_seconds == 12
    assert settings.bitfinex_source_address == "10.0.0.7"
    assert load(BITFINEX_SOURCE_ADDRESS="::1").bitfinex_source_address == "::1"
    assert load(BITFINEX_SOURCE_ADDRESS="").bitfinex_source_address is None


def test_field_names_are_the_variables_in_lower_case() -> None:
    fields = set(Settings.model_fields)
    for name in CONTRACT_DEFAULTS:
        if not name.startswith("RETENTION_"):
            assert name.lower() in fields
    assert "retention_days" in fields


def test_dotenv_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "# comment\nBITFINEX_SYMBOLS=tDOGE:USD, xrpusd\nAPI_PORT=9000\nRETENTION_5M=7\n"
    )
    monkeypatch.setenv("API_PORT", "9100")
    settings = load_settings()  # .env in the working directory
    assert settings.bitfinex_symbols == ["DOGEUSD", "XRPUSD"]
    assert settings.api_port == 9100
    assert settings.retention_days["5m"] == 7
    assert load_settings(env_file=None).bitfinex_symbols == ["BTCUSD", "ETHUSD", "SOLUSD"]


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WS_SAVE_BATCH_SIZE", "50")
    assert load_settings(env_file=None, ws_save_batch_size=7).ws_save_batch_size == 7
    with pytest.raises(TypeError, match="no_such_setting"):
        load_settings(env_file=None, no_such_setting=1)


def test_every_interval_accepts_fractions() -> None:
    settings = load(
        GAP_REPAIR_INTERVAL_MINUTES="0.05",
        GAP_DETECTION_INTERVAL_MINUTES="0.1",
        UPDATE_INTERVAL_SECONDS="0.5",
        WS_SAVE_FLUSH_SECONDS="0.01",
        WS_RECONNECT_INITIAL_BACKOFF="0.02",
        WS_RECONNECT_MAX_BACKOFF="0.2",
        WS_HEARTBEAT_TIMEOUT_SECONDS="1.5",
        WS_CATCHUP_LOOKBACK_MINUTES="2.5",
        RATE_LIMIT_DELAY="0.05",
        RATE_LIMIT_INITIAL_BACKOFF="0.1",
        RATE_LIMIT_MIN_BACKOFF_SECONDS="0.2",
        RATE_LIMIT_MAX_BACKOFF="0.4",
        CLEANUP_INITIAL_DELAY_MINUTES="0.01",
        CLEANUP_INTERVAL_HOURS="0.001",
        BACKFILL_DAYS="0.5",
        RETENTION_1H="0.25",
    )
    assert settings.gap_repair_interval_minutes == 0.05
    assert settings.ws_save_flush_seconds == 0.01
    assert settings.cleanup_interval_hours == 0.001
    assert settings.backfill_days == 0.5
    assert settings.retention_ms("1h") == DAY_MS // 4


def test_symbols_are_canonical_and_deduplicated() -> None:
    settings = load(BITFINEX_SYMBOLS="btcusd, tBTCUSD,BTC:USD,tDOGE:USD,doge:usd,,")
    assert settings.bitfinex_symbols == ["BTCUSD", "DOGEUSD"]


def test_timeframes_are_canonical_and_deduplicated() -> None:
    settings = load(BITFINEX_TIMEFRAMES="1D,1d,1W,14D,1m,1M,4H")
    assert settings.bitfinex_timeframes == ["1d", "1w", "14d", "1m", "1M", "4h"]


def test_booleans_accept_the_usual_spellings() -> None:
    settings = load(BACKFILL_ON_STARTUP="no", REST_UPDATE_ENABLED="1", WS_INGESTION_ENABLED="off")
    assert (settings.backfill_on_startup, settings.rest_update_enabled) == (False, True)
    assert settings.ws_ingestion_enabled is False


def test_log_level_and_format_are_normalised() -> None:
    settings = load(LOG_LEVEL="warn", LOG_FORMAT="JSON")
    assert (settings.log_level, settings.log_format) == ("WARNING", "json")


def test_retention_for_any_timeframe_month_and_forever() -> None:
    settings = load(RETENTION_5M="3", RETENTION_1W="100", RETENTION_1MONTH="3650", RETENTION_1H="0")
    assert settings.retention_days["5m"] == 3
    assert settings.retention_days["1w"] == 100
    assert settings.retention_days["1M"] == 3650
    assert settings.retention_days["1m"] == 30  # RETENTION_1M is the minute: default kept
    assert settings.retention_ms("1h") is None  # 0 keeps forever
    assert settings.retention_ms("15m") is None  # no setting: forever
    assert settings.retention_ms("1d") == 1825 * DAY_MS


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("WS_SAVE_BATCH_SIZE", "-1", "at least 1"),
        ("WS_SAVE_BATCH_SIZE", "0", "at least 1"),
        ("WS_SAVE_BATCH_SIZE", "ten", "whole number"),
        ("API_PORT", "0", "at least 1"),
        ("API_PORT", "70000", "at most 65535"),
        ("API_HOST", "", "not a host"),
        ("WS_MAX_SUBSCRIPTIONS_PER_CONNECTION", "0", "at least 1"),
        ("WS_MAX_SUBSCRIPTIONS_PER_CONNECTION", "500", "at most"),
        ("GAP_REPAIR_INTERVAL_MINUTES", "0", "greater than 0"),
        ("GAP_DETECTION_INTERVAL_MINUTES", "-5", "greater than 0"),
        ("UPDATE_INTERVAL_SECONDS", "soon", "number"),
        ("WS_SAVE_FLUSH_SECONDS", "inf", "finite"),
        ("WS_HEARTBEAT_TIMEOUT_SECONDS", "nan", "finite"),
        ("BACKFILL_DAYS", "0", "greater than 0"),
        ("CLEANUP_INTERVAL_HOURS", "0", "greater than 0"),
        ("CLEANUP_INITIAL_DELAY_MINUTES", "-1", "at least 0"),
        ("GAP_REPAIR_MAX_REPAIRS_PER_RUN", "-1", "at least 0"),
        ("GAP_DETECTION_MAX_OPEN_GAPS", "1.5", "whole number"),
        ("RATE_LIMIT_DELAY", "-0.1", "at least 0"),
        ("RATE_LIMIT_MAX_RETRIES", "-1", "at least 0"),
        ("RATE_LIMIT_MAX_BACKOFF", "1", "below RATE_LIMIT_INITIAL_BACKOFF"),
        ("WS_RECONNECT_MAX_BACKOFF", "0.5", "below WS_RECONNECT_INITIAL_BACKOFF"),
        ("BACKFILL_ON_STARTUP", "maybe", "true or false"),
        ("WS_INGESTION_ENABLED", "", "true or false"),
        ("BITFINEX_SYMBOLS", " , ", "at least one"),
        ("BITFINEX_SYMBOLS", "BTC/USD", "not a trading pair"),
        ("BITFINEX_TIMEFRAMES", "1h,7h", "7h"),
        ("BITFINEX_TIMEFRAMES", "", "at least one"),
        ("BITFINEX_REST_URL", "ftp://api-pub.bitfinex.com", "http or https"),
        ("BITFINEX_REST_URL", "https://", "with a host"),
        ("BITFINEX_WS_URL", "https://api-pub.bitfinex.com/ws/2", "ws or wss"),
        ("DATABASE_URL", "mysql://localhost/db", "not supported"),
        ("DATABASE_URL", "not a url", "not a URL"),
        ("DATABASE_URL", "sqlite:///:memory:", "file path"),
        ("DATABASE_URL", "sqlite://", "file path"),
        ("DATABASE_URL", "", "empty"),
        ("RETENTION_1H", "-1", "days"),
        ("RETENTION_5M", "a week", "days"),
        ("RETENTION_7H", "1", "no known timeframe"),
        ("LOG_LEVEL", "LOUD", "DEBUG, INFO"),
        ("LOG_FORMAT", "xml", "text or json"),
        ("DAEMON_ID", "node 1", "without spaces"),
        ("DAEMON_ID", "nœud", "printable ASCII"),
        ("DAEMON_ID", "n" * 65, "at most 64"),
        ("LEASE_TTL_SECONDS", "4", "at least 5"),
        ("LEASE_TTL_SECONDS", "3601", "at most 3600"),
        ("LEASE_TTL_SECONDS", "1.5", "whole number"),
        ("BITFINEX_SOURCE_ADDRESS", "eth0", "not an IP address"),
    ],
)
def test_a_bad_value_names_the_variable(variable: str, value: str, fragment: str) -> None:
    error = config_error(**{variable: value})
    assert error.variable == variable
    assert str(error).startswith(f"{variable}: ")
    assert fragment in error.problem
    assert "\n" not in str(error)


def test_the_same_errors_come_from_the_dotenv_file(tmp_path: Path) -> None:
    env_file = tmp_path / "custom.env"
    env_file.write_text("WS_SAVE_BATCH_SIZE=-1\n")
    with pytest.raises(ConfigError, match=r"^WS_SAVE_BATCH_SIZE: "):
        load_settings(env_file=str(env_file))


def test_accepted_database_urls() -> None:
    for url in (
        "sqlite:///./x.db",
        "sqlite:////tmp/x.db",
        "sqlite+aiosqlite:///x.db",
        "postgresql://u:p@localhost:5432/db",
        "postgres://u:p@localhost/db",
        "postgresql+asyncpg://u@localhost/db",
        "postgresql+psycopg://localhost/db",
    ):
        assert load(DATABASE_URL=url).database_url == url


def test_secrets_never_appear_in_messages_or_masked_dict() -> None:
    bad_port = config_error(DATABASE_URL="postgresql://user:s3cretpw@db:notaport/x")
    assert "s3cretpw" not in str(bad_port)
    bad_scheme = config_error(DATABASE_URL="mysql://user:s3cretpw@db/x")
    assert "s3cretpw" not in str(bad_scheme)
    settings = load(DATABASE_URL="postgresql://user:s3cretpw@db:5433/x", API_TOKEN="tok-abc-123")
    shown = repr(settings.masked_dict())
    assert "s3cretpw" not in shown
    assert "tok-abc-123" not in shown
    assert settings.masked_dict()["API_TOKEN"] == "***"
    assert settings.safe_database_url == "postgresql://user:***@db:5433/x"
    assert "tok-abc-123" not in repr(settings)
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == "tok-abc-123"
    assert settings.database_location() == "db:5433/x"
    assert set(settings.secret_values()) == {"s3cretpw", "tok-abc-123"}


def test_blank_api_token_is_unset() -> None:
    assert load(API_TOKEN="  ").api_token is None


def test_native_and_derived_series() -> None:
    settings = load(BITFINEX_SYMBOLS="BTCUSD,ETHUSD", BITFINEX_TIMEFRAMES="4h,1h,8h,1d,2h")
    assert settings.native_series() == [
        SeriesKey("BTCUSD", "1h"),
        SeriesKey("BTCUSD", "1d"),
        SeriesKey("ETHUSD", "1h"),
        SeriesKey("ETHUSD", "1d"),
    ]
    assert settings.derived_series() == [
        SeriesKey("BTCUSD", "4h"),
        SeriesKey("BTCUSD", "8h"),
        SeriesKey("BTCUSD", "2h"),
        SeriesKey("ETHUSD", "4h"),
        SeriesKey("ETHUSD", "8h"),
        SeriesKey("ETHUSD", "2h"),
    ]
    assert settings.all_series() == settings.native_series() + settings.derived_series()


def test_a_derived_timeframe_alone_still_ingests_its_source() -> None:
    settings = load(BITFINEX_SYMBOLS="SOLUSD", BITFINEX_TIMEFRAMES="4h")
    assert settings.native_series() == [SeriesKey("SOLUSD", "1h")]
    assert settings.derived_series() == [SeriesKey("SOLUSD", "4h")]


def test_sqlite_location_is_the_file() -> None:
    settings = load(DATABASE_URL="sqlite:////tmp/some.db")
    assert settings.is_sqlite
    assert settings.database_location() == "/tmp/some.db"
    assert settings.secret_values() == []


def test_env_example_documents_every_setting_with_its_default() -> None:
    example = Path(__file__).resolve().parents[2] / ".env.example"
    text = example.read_text()
    for name in CONTRACT_DEFAULTS:
        assert f"{name}=" in text, name
    shown = load_settings(env_file=str(example)).masked_dict()
    shown.pop("DAEMON_ID")
    assert shown == CONTRACT_DEFAULTS


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in CONTRACT_DEFAULTS:
        assert f"| `{name}` |" in readme, name


def test_allowed_hosts_default_to_the_loopback_names_and_api_host() -> None:
    assert load().api_allowed_hosts == ["127.0.0.1", "localhost", "[::1]"]
    assert load(API_HOST="md.lan").api_allowed_hosts[-1] == "md.lan"
    assert load(API_HOST="::1").api_allowed_hosts == ["127.0.0.1", "localhost", "[::1]"]
    assert load(API_HOST="fd00::5").api_allowed_hosts[-1] == "[fd00::5]"
    given = load(API_HOST="md.lan", API_ALLOWED_HOSTS="MD.example.com., *.corp.example, ::1, *")
    assert given.api_allowed_hosts == ["md.example.com", "*.corp.example", "[::1]", "*"]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("a b", "not a host name"),
        ("md.example.com:443", "without a port"),
        ("[::1]:8100", "without a port"),
        ("http://md.example.com", "not a host name"),
        ("*example.com", "*.domain"),
        ("-bad.example", "not a host name"),
        ("x" * 300, "host name"),
    ],
)
def test_bad_allowed_hosts_are_named(value: str, fragment: str) -> None:
    error = config_error(API_ALLOWED_HOSTS=value)
    assert error.variable == "API_ALLOWED_HOSTS"
    assert fragment in error.problem
