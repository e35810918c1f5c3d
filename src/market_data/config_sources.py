"""Where the settings come from: `.env` and the process environment (the environment wins), as
raw strings. Lists stay plain comma-separated text (no JSON) and every `RETENTION_<TF>` variable
is gathered into `retention_days`; the fields' validators in `config.py` parse the values.

The suffix of `RETENTION_<TF>` is a timeframe, any case: `RETENTION_5M` is five minutes and
`RETENTION_1M` one minute (as in the seed); a month is written `RETENTION_1MONTH`.
"""

from __future__ import annotations

from typing import Any

from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
)

from market_data.timeframes import parse_timeframe

RETENTION_PREFIX = "retention_"


def retention_timeframe(suffix: str) -> str:
    """`5m` -> `5m`, `1M` -> `1m` (the seed's minute), `1MONTH` -> `1M` (a month)."""
    lowered = suffix.strip().lower()
    if lowered.endswith("month") and lowered[:-5].isdigit():
        return parse_timeframe(lowered[:-5] + "M")
    return parse_timeframe(lowered)


def is_retention_name(key: str) -> bool:
    return key.lower().startswith(RETENTION_PREFIX)


class EnvironmentSource(PydanticBaseSettingsSource):
    """Raw strings from `.env` and the process environment (the environment wins).

    Values stay strings and are parsed by the fields' validators, so lists are plain
    comma-separated text (no JSON) and every `RETENTION_<TF>` is gathered into `retention_days`.
    """

    def __init__(
        self, settings_cls: type[BaseSettings], env: EnvSettingsSource, dotenv: DotEnvSettingsSource
    ) -> None:
        super().__init__(settings_cls)
        self._merged: dict[str, str | None] = {**dotenv.env_vars, **env.env_vars}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._merged.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        retention: dict[str, str] = {}
        for name in self.settings_cls.model_fields:
            raw = self._merged.get(name)
            if raw is not None and name != "retention_days":
                values[name] = raw
        for name, raw in self._merged.items():
            if name.startswith(RETENTION_PREFIX) and raw is not None and name != "retention_days":
                retention[name.upper()] = raw
        if retention:
            values["retention_days"] = retention
        return values
