"""Settings: environment variables (CONTRACT section 2), also read from `.env`; the environment
wins.

Build them with `load_settings()` once, in the CLI or the daemon, and pass them down. A bad value
raises `ConfigError(VARIABLE, problem)`: one line, naming the upper-case variable, never echoing a
secret (the `DATABASE_URL` password, `API_TOKEN`).

Retention is read from every `RETENTION_<TF>` variable. The suffix is a timeframe, any case:
`RETENTION_5M` is five minutes and `RETENTION_1M` one minute (as in the seed); a month is written
`RETENTION_1MONTH`. A value of 0 keeps that timeframe forever, as does having no setting at all.

Where the raw values come from is `config_sources.py`; how a bad one becomes a one-line
`ConfigError`, `config_errors.py`; DATABASE_URL parsing and masking, `dburl.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from market_data import dburl as urls
from market_data.allowed_hosts import allowed_host, default_allowed_hosts
from market_data.cluster_settings import DaemonId, LeaseTtlSeconds, SourceAddress, default_daemon_id
from market_data.config_errors import config_error, problem
from market_data.config_sources import (
    RETENTION_PREFIX,
    EnvironmentSource,
    is_retention_name,
    retention_timeframe,
)
from market_data.config_values import check_url, split_list, to_number, unique
from market_data.dburl import normalize_database_url
from market_data.models import SeriesKey
from market_data.symbols import (
    SymbolSpec,
    SymbolSpecError,
    derived_series,
    native_series,
    parse_spec,
)
from market_data.timeframes import DAY_MS, TimeframeError, parse_timeframe

DEFAULT_RETENTION_DAYS: dict[str, float] = {"1m": 30.0, "1h": 365.0, "4h": 730.0, "1d": 1825.0}
MAX_SYMBOLS = 1000
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

Seconds = Annotated[float, Field(gt=0)]
Minutes = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    """Every setting of the daemon and the CLI; field names are the variables in lower case."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
        allow_inf_nan=False,
    )

    database_url: str = "sqlite:///./market_data.db"
    bitfinex_symbols: Annotated[list[str], NoDecode] = ["BTCUSD", "ETHUSD", "SOLUSD"]
    bitfinex_timeframes: Annotated[list[str], NoDecode] = ["1h", "4h", "1d"]
    bitfinex_rest_url: str = "https://api-pub.bitfinex.com"
    bitfinex_ws_url: str = "wss://api-pub.bitfinex.com/ws/2"
    bitfinex_source_address: SourceAddress = None

    daemon_id: DaemonId = Field(default_factory=default_daemon_id)
    lease_ttl_seconds: LeaseTtlSeconds = 30

    backfill_on_startup: bool = True
    backfill_days: float = Field(default=365.0, gt=0, le=36_500)

    gap_repair_interval_minutes: Minutes = 60.0
    gap_detection_interval_minutes: Minutes = 60.0
    gap_repair_max_repairs_per_run: int = Field(default=10, ge=0)
    gap_detection_max_open_gaps: int = Field(default=0, ge=0)

    rest_update_enabled: bool = False
    update_interval_seconds: Seconds = 60.0

    retention_days: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_RETENTION_DAYS))
    cleanup_initial_delay_minutes: float = Field(default=60.0, ge=0)
    cleanup_interval_hours: float = Field(default=24.0, gt=0)

    ws_ingestion_enabled: bool = True
    ws_catchup_lookback_minutes: float = Field(default=180.0, ge=0)
    ws_max_subscriptions_per_connection: int = Field(default=25, ge=1, le=30)
    ws_save_batch_size: int = Field(default=200, ge=1, le=100_000)
    ws_save_flush_seconds: Seconds = 2.0
    ws_reconnect_initial_backoff: Seconds = 1.0
    ws_reconnect_max_backoff: Seconds = 60.0
    ws_heartbeat_timeout_seconds: Seconds = 30.0

    rate_limit_delay: float = Field(default=6.0, ge=0)
    rate_limit_max_retries: int = Field(default=10, ge=0, le=1000)
    rate_limit_initial_backoff: float = Field(default=2.0, ge=0)
    rate_limit_min_backoff_seconds: float = Field(default=60.0, ge=0)
    rate_limit_max_backoff: float = Field(default=120.0, ge=0)

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8100, ge=1, le=65535)
    api_token: SecretStr | None = None
    # Empty means the default: the loopback names and api_host (filled in by _check_ranges).
    api_allowed_hosts: Annotated[list[str], NoDecode] = []

    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    # BITFINEX_SYMBOLS' patterns (`all` is `*`); `bitfinex_symbols` keeps the explicit names.
    _symbol_patterns: tuple[str, ...] = PrivateAttr(default=())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if not isinstance(env_settings, EnvSettingsSource) or not isinstance(
            dotenv_settings, DotEnvSettingsSource
        ):
            raise TypeError("unexpected settings sources")
        return init_settings, EnvironmentSource(settings_cls, env_settings, dotenv_settings)

    # -- validation --------------------------------------------------------------------------

    @field_validator("database_url", mode="before")
    @classmethod
    def _check_database_url(cls, value: Any) -> str:
        # The storage layer's own check, so both agree; its messages never include the URL.
        text = str(value).strip()
        if not text:
            raise ValueError("is empty")
        try:
            normalize_database_url(text)
        except ValueError as exc:
            # The URL is shown (so the user sees which one was read), its password masked.
            shown = urls.safe_database_url(text)
            shown = shown if len(shown) <= 120 else shown[:117] + "..."
            raise ValueError(f"{str(exc).removeprefix('DATABASE_URL ')}: {shown}") from None
        return text

    @field_validator("bitfinex_symbols", mode="before")
    @classmethod
    def _check_symbols(cls, value: Any) -> list[str]:
        # Names come back canonical and patterns upper case (`all` as `*`), in one list that
        # _check_ranges splits: a field validator cannot fill a second attribute.
        items = split_list(value)
        if not items:
            raise ValueError("must list at least one symbol, e.g. BTCUSD,ETHUSD (or all, *USD)")
        try:
            spec = parse_spec(items)
        except SymbolSpecError as exc:
            raise ValueError(str(exc)) from None
        if len(spec.names) > MAX_SYMBOLS:
            raise ValueError(
                f"lists {len(spec.names)} symbols; at most {MAX_SYMBOLS} are supported"
            )
        return [*spec.names, *spec.patterns]

    @field_validator("bitfinex_timeframes", mode="before")
    @classmethod
    def _check_timeframes(cls, value: Any) -> list[str]:
        items = split_list(value)
        if not items:
            raise ValueError("must list at least one timeframe, e.g. 1h,4h,1d")
        try:
            return unique(parse_timeframe(item) for item in items)
        except TimeframeError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("bitfinex_rest_url", mode="before")
    @classmethod
    def _check_rest_url(cls, value: Any) -> str:
        return check_url(value, ("http", "https"))

    @field_validator("bitfinex_ws_url", mode="before")
    @classmethod
    def _check_ws_url(cls, value: Any) -> str:
        return check_url(value, ("ws", "wss"))

    @field_validator("retention_days", mode="before")
    @classmethod
    def _check_retention(cls, value: Any) -> dict[str, float]:
        if not isinstance(value, Mapping):
            raise ValueError("must map timeframes to days")
        days = dict(DEFAULT_RETENTION_DAYS)
        # Environment names (RETENTION_1H) first, then explicit timeframe keys (`1h`) over them.
        from_env = [(str(k), v) for k, v in value.items() if is_retention_name(str(k))]
        explicit = [(str(k), v) for k, v in value.items() if not is_retention_name(str(k))]
        for key, raw in from_env + explicit:
            is_env = is_retention_name(key)
            variable = key.upper() if is_env else f"RETENTION_{key.upper()}"
            try:
                tf = (
                    retention_timeframe(key[len(RETENTION_PREFIX) :])
                    if is_env
                    else parse_timeframe(key)
                )
            except TimeframeError:
                raise problem(
                    variable,
                    "names no known timeframe (RETENTION_5M, RETENTION_1H, "
                    "RETENTION_1D, RETENTION_1MONTH...)",
                ) from None
            number = to_number(raw)
            if number is None or number < 0:
                raise problem(
                    variable,
                    f"must be a number of days >= 0 (0 keeps forever), got {str(raw)[:40]!r}",
                )
            if number == 0:
                days.pop(tf, None)
            else:
                days[tf] = number
        return days

    @field_validator("api_token", mode="before")
    @classmethod
    def _blank_token_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("api_host", mode="before")
    @classmethod
    def _check_host(cls, value: Any) -> str:
        text = str(value).strip()
        if not text or any(c.isspace() or c in "/@" for c in text):
            raise ValueError(f"{text[:60]!r} is not a host name or address")
        return text

    @field_validator("api_allowed_hosts", mode="before")
    @classmethod
    def _check_allowed_hosts(cls, value: Any) -> list[str]:
        return unique(allowed_host(item) for item in split_list(value))

    @field_validator("log_level", mode="before")
    @classmethod
    def _check_level(cls, value: Any) -> str:
        level = str(value).strip().upper()
        level = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(level, level)
        if level not in _LOG_LEVELS:
            raise ValueError(f"{str(value)[:40]!r} is not one of {', '.join(_LOG_LEVELS)}")
        return level

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_ranges(self) -> Settings:
        if self.ws_reconnect_max_backoff < self.ws_reconnect_initial_backoff:
            raise problem(
                "WS_RECONNECT_MAX_BACKOFF",
                f"{self.ws_reconnect_max_backoff:g} is below WS_RECONNECT_INITIAL_BACKOFF "
                f"({self.ws_reconnect_initial_backoff:g})",
            )
        if self.rate_limit_max_backoff < self.rate_limit_initial_backoff:
            raise problem(
                "RATE_LIMIT_MAX_BACKOFF",
                f"{self.rate_limit_max_backoff:g} is below RATE_LIMIT_INITIAL_BACKOFF "
                f"({self.rate_limit_initial_backoff:g})",
            )
        if not self.api_allowed_hosts:
            self.api_allowed_hosts = default_allowed_hosts(self.api_host)
        spec = parse_spec(self.bitfinex_symbols)  # already checked: names and patterns apart
        self.bitfinex_symbols = list(spec.names)
        self._symbol_patterns = spec.patterns
        return self

    # -- helpers -----------------------------------------------------------------------------

    @property
    def symbol_patterns(self) -> tuple[str, ...]:
        """BITFINEX_SYMBOLS' patterns (`all` is `*`); empty when only names are listed."""
        return self._symbol_patterns

    @property
    def has_symbol_patterns(self) -> bool:
        """Whether the symbols come from the exchange's pair list (refreshed while running)."""
        return bool(self._symbol_patterns)

    @property
    def symbol_spec(self) -> SymbolSpec:
        return SymbolSpec(tuple(self.bitfinex_symbols), self._symbol_patterns)

    @property
    def safe_database_url(self) -> str:
        """DATABASE_URL with the password replaced by `***`, for logs and screens."""
        return urls.safe_database_url(self.database_url)

    @property
    def is_sqlite(self) -> bool:
        return urls.is_sqlite(self.database_url)

    def database_location(self) -> str:
        """Where the database is, for messages: `host:port/db` for PostgreSQL, else the file."""
        return urls.describe_target(self.database_url)

    def secret_values(self) -> list[str]:
        """Every secret string (as written and as decoded) so logging can mask them."""
        secrets: list[str] = []
        password = urls.password_of(self.database_url)
        if password:
            secrets.append(password)
            raw = self.database_url.split("://", 1)[-1].rsplit("@", 1)[0].partition(":")[2]
            if raw and raw != password:
                secrets.append(raw)
        if self.api_token is not None and self.api_token.get_secret_value():
            secrets.append(self.api_token.get_secret_value())
        return secrets

    def native_series(self) -> list[SeriesKey]:
        """Series fetched from the exchange for the listed names (`symbols.native_series`)."""
        return native_series(self.bitfinex_symbols, self.bitfinex_timeframes)

    def derived_series(self) -> list[SeriesKey]:
        """Series aggregated locally (timeframes Bitfinex does not serve, e.g. 4h)."""
        return derived_series(self.bitfinex_symbols, self.bitfinex_timeframes)

    def all_series(self) -> list[SeriesKey]:
        """Every stored series: native ones first, then derived ones."""
        return self.native_series() + self.derived_series()

    def retention_ms(self, tf: str) -> int | None:
        """How long to keep candles of `tf`, or None to keep them forever."""
        days = self.retention_days.get(tf)
        return None if days is None else round(days * DAY_MS)

    def masked_dict(self) -> dict[str, Any]:
        """Every setting by upper-case variable name, secrets masked, ready to print as JSON."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "database_url":
                shown["DATABASE_URL"] = self.safe_database_url
            elif name == "api_token":
                shown["API_TOKEN"] = None if value is None else "***"
            elif name == "bitfinex_symbols":
                shown["BITFINEX_SYMBOLS"] = [*value, *self._symbol_patterns]
            elif name == "retention_days":
                for tf, days in value.items():
                    shown[f"RETENTION_{'1MONTH' if tf == '1M' else tf.upper()}"] = days
            else:
                shown[name.upper()] = list(value) if isinstance(value, list) else value
        return shown


def load_settings(env_file: str | None = ".env", **overrides: Any) -> Settings:
    """Read and check every setting; raise ConfigError naming the first bad variable.

    `overrides` are field names (`ws_save_batch_size=10`) and win over the environment.
    `env_file=None` reads the environment only.
    """
    unknown = set(overrides) - set(Settings.model_fields)
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        raise config_error(exc) from None
