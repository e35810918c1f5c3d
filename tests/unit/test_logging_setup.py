"""Log output: the seed's text shape, JSON lines, and secrets masked everywhere in a record."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from market_data.config import load_settings
from market_data.logging_setup import configure_logging, forget_secrets, register_secret

log = logging.getLogger("market_data.test_logging")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    root = logging.getLogger()
    level = root.level
    yield buffer
    for handler in [h for h in root.handlers if type(h).__name__ == "_Handler"]:
        root.removeHandler(handler)
    root.setLevel(level)
    forget_secrets()


def test_text_lines_have_the_seeds_shape(stream: io.StringIO) -> None:
    configure_logging("INFO", "text", stream=stream)
    log.info("Gap detected: %s from %s to %s", "BTCUSD/1h", "2026-02-05 20:00:00", "23:00:00")
    log.debug("not shown at INFO")
    log.warning("slow down")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - Gap detected: BTCUSD/1h from 2026-02-05 20:00:00 "
        r"to 23:00:00",
        lines[0],
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - WARNING - slow down", lines[1])


def test_json_is_one_object_a_line_with_extra_fields(stream: io.StringIO) -> None:
    configure_logging("DEBUG", "json", stream=stream)
    log.debug("Repaired gap with %d candles", 3, extra={"symbol": "BTCUSD", "candles": 3})
    entry = json.loads(stream.getvalue().strip())
    assert entry["message"] == "Repaired gap with 3 candles"
    assert entry["level"] == "DEBUG"
    assert entry["logger"] == "market_data.test_logging"
    assert (entry["symbol"], entry["candles"]) == ("BTCUSD", 3)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"])


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_are_masked_in_message_args_extra_and_exceptions(
    stream: io.StringIO, fmt: str
) -> None:
    settings = load_settings(
        env_file=None,
        database_url="postgresql://app:pa%40ss-word@db:5432/md",
        api_token="token-xyz-987",
    )
    configure_logging(settings, stream=stream)
    configure_logging("INFO", fmt, stream=stream)  # reconfiguring keeps the secrets
    log.info("connecting to postgresql://app:pa%%40ss-word@db:5432/md as %s", "pa@ss-word")
    log.info("token", extra={"token": "token-xyz-987"})
    try:
        raise ConnectionError("auth failed for token-xyz-987")
    except ConnectionError:
        log.exception("failed")
    output = stream.getvalue()
    for secret in ("pa@ss-word", "pa%40ss-word", "token-xyz-987"):
        assert secret not in output
    assert output.count("***") >= 4
    assert "ConnectionError" in output


def test_short_values_are_not_treated_as_secrets(stream: io.StringIO) -> None:
    register_secret("ab")
    configure_logging("INFO", "text", stream=stream)
    log.info("tab about")
    assert stream.getvalue().endswith(" - tab about\n")


def test_reconfiguring_replaces_the_handler(stream: io.StringIO) -> None:
    configure_logging("INFO", "text", stream=stream)
    configure_logging("INFO", "text", stream=stream)
    log.info("once")
    assert stream.getvalue().count("once") == 1
