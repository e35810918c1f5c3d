"""Small checks of raw setting values shared by the settings' validators (config.py)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit


def split_list(value: Any) -> list[str]:
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, Iterable):
        items = [str(v) for v in value]
    else:
        raise ValueError("must be a comma-separated list")
    return [item.strip() for item in items if item.strip()]


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def check_url(value: Any, schemes: tuple[str, ...]) -> str:
    text = str(value).strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"{text[:80]!r} is not a valid URL") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"{text[:80]!r} must be a {' or '.join(schemes)} URL with a host")
    return text.rstrip("/") if parts.path in ("", "/") else text


def to_number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    try:
        number = float(raw)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
