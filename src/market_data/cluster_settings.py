"""The settings of a daemon that shares its PostgreSQL database with others (CONTRACT section 9):
`DAEMON_ID`, `LEASE_TTL_SECONDS`, `BITFINEX_SOURCE_ADDRESS`. Kept apart from config.py, which
declares them with these types."""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

MAX_DAEMON_ID_CHARS = 64


def default_daemon_id() -> str:
    """Host name and PID: unique among the daemons of one host, readable in /status."""
    host = socket.gethostname().split(".")[0] or "daemon"
    return f"{host}-{os.getpid()}"[-MAX_DAEMON_ID_CHARS:]


def check_daemon_id(value: Any) -> str:
    # Printable ASCII without spaces: the id is shown in logs, /status and job rows, and
    # compared as an exact string in the database.
    text = str(value).strip()
    if not text:
        return default_daemon_id()
    if len(text) > MAX_DAEMON_ID_CHARS:
        raise ValueError(f"is {len(text)} characters long; at most {MAX_DAEMON_ID_CHARS}")
    if not all("!" <= c <= "~" for c in text):
        raise ValueError(f"{text[:40]!r} must be printable ASCII without spaces")
    return text


def check_source_address(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text[:60]!r} is not an IP address") from None


DaemonId = Annotated[str, BeforeValidator(check_daemon_id)]
LeaseTtlSeconds = Annotated[int, Field(ge=5, le=3600)]
SourceAddress = Annotated[str | None, BeforeValidator(check_source_address)]
