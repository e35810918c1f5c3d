"""Log output: the seed's plain-text shape or one JSON object a line, with secrets masked.

Text (default), times in UTC:

    2026-02-06 01:30:15 - Gap detected: BTCUSD/1h from 2026-02-05 20:00:00 to 2026-02-05 23:00:00
    2026-02-06 01:30:16 - WARNING - Rate limited by Bitfinex; everyone waits 60 s

JSON: `{"ts": "2026-02-06T01:30:15.123Z", "level": "INFO", "logger": "...", "message": "...", ...}`
with any `extra={...}` fields of the record alongside.

Secrets (the DATABASE_URL password, API_TOKEN) are registered with `register_secret()` and replaced
by `***` in every record that reaches our handler: message, arguments, extra fields, exception and
stack text. Logging is process-global, so the registry of secrets is too.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from market_data.config import Settings

MASK = "***"
# A very short "secret" would mask ordinary words all over the logs; such values are not
# secrets worth the damage (and do not occur as real passwords or tokens).
MIN_SECRET_LENGTH = 3
MAX_SECRETS = 64
_QUIET_LOGGERS = {
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "aiosqlite": logging.INFO,
    "alembic": logging.WARNING,
}
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}

_secrets: list[str] = []


def register_secret(value: str | None) -> None:
    """Mask `value` in every log record from now on."""
    if not value or len(value) < MIN_SECRET_LENGTH or value in _secrets:
        return
    if len(_secrets) >= MAX_SECRETS:
        _secrets.pop(0)
    _secrets.append(value)
    # Longest first, so a secret containing another is masked whole.
    _secrets.sort(key=len, reverse=True)


def forget_secrets() -> None:
    """Drop every registered secret (for tests)."""
    _secrets.clear()


def mask_secrets(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class SecretFilter(logging.Filter):
    """Rewrites each record with its secrets masked; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        record.msg = mask_secrets(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _RECORD_FIELDS and isinstance(value, str):
                setattr(record, key, mask_secrets(value))
        return True


class TextFormatter(logging.Formatter):
    """`<UTC date time> - message`; levels other than INFO are named after the time."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime(_TIME_FORMAT, time.gmtime(record.created))
        message = record.getMessage()
        if record.levelno == logging.INFO:
            line = f"{stamp} - {message}"
        else:
            line = f"{stamp} - {record.levelname} - {message}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        millis = int(record.msecs)
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{millis:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in entry:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Our root handler; marked so a second configure_logging() replaces it."""


def configure_logging(
    level: str | Settings = "INFO",
    fmt: str = "text",
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log record to `stream` (stderr) in `fmt` ("text" or "json") from `level` up.

    Given the settings instead of a level, takes LOG_LEVEL, LOG_FORMAT and their secrets.
    """
    if not isinstance(level, str):
        settings = level
        level, fmt = settings.log_level, settings.log_format
        secrets = [*secrets, *settings.secret_values()]
    for secret in secrets:
        register_secret(secret)
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(SecretFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric if isinstance(numeric, int) else logging.INFO)
    for name, quiet in _QUIET_LOGGERS.items():
        # Per-request and per-migration-step chatter drowns the seed's messages unless debugging.
        logging.getLogger(name).setLevel(logging.DEBUG if root.level <= logging.DEBUG else quiet)
    logging.captureWarnings(True)
    return handler
