"""Time parameter parsing (api/params.py): ASCII ISO 8601 or epoch ms, 1970 to 2200, else 422."""

from __future__ import annotations

import pytest
from fastapi.exceptions import RequestValidationError

from market_data.api.params import MAX_TIME_MS, parse_time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1767225600000", 1_767_225_600_000),
        ("2026-01-01", 1_767_225_600_000),
        ("2026-01-01T00:00:00Z", 1_767_225_600_000),
        ("2026-01-01t00:00:00z", 1_767_225_600_000),
        ("2026-01-01T01:00:00+01:00", 1_767_225_600_000),
        ("2026-01-01T00:00:00.123Z", 1_767_225_600_123),
        ("1970-01-01T00:00:00Z", 0),
        ("2200-01-01T00:00:00Z", MAX_TIME_MS),
        (str(MAX_TIME_MS), MAX_TIME_MS),
        ("  2026-01-01  ", 1_767_225_600_000),
    ],
)
def test_accepted(text: str, expected: int) -> None:
    assert parse_time("start", text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "9999-12-31T23:59:59-23:59",  # the year 10000 in UTC: was a 500
        "9999-12-31T23:59:59Z",
        "2200-01-01T00:00:00.001Z",
        str(MAX_TIME_MS + 1),
        "9" * 16,
        "1969-12-31T23:59:59Z",
        "1970-01-01T00:00:00+00:01",
        "0001-01-01T00:00:00+23:59",
        "\u0661\u0667\u0666\u0667",  # Arabic-Indic digits: int() takes them
        "\uff11\uff17\uff16\uff17",  # full-width digits
        "2026-01-01T00:00:00\uff3a",
        "-1",
        "1e12",
        "NaN",
        "",
        "2026-13-45",
        "2026-01-01T00:00:00+24:00",
    ],
)
def test_refused_with_the_parameter_named(text: str) -> None:
    with pytest.raises(RequestValidationError) as caught:
        parse_time("end", text)
    (error,) = caught.value.errors()
    assert error["loc"] == ("query", "end")
