"""Pydantic's validation errors as one `ConfigError`: the upper-case variable and what is wrong
with it in plain words, never echoing a secret (the `DATABASE_URL` password, `API_TOKEN`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from market_data.errors import ConfigError

SECRET_FIELDS = frozenset({"database_url", "api_token"})


def problem(variable: str, problem: str) -> PydanticCustomError:
    """A validation error that carries the variable it is about (for model-level checks)."""
    return PydanticCustomError("config", "{problem}", {"variable": variable, "problem": problem})


def config_error(exc: ValidationError) -> ConfigError:
    error = exc.errors(include_url=False)[0]
    ctx = error.get("ctx") or {}
    loc = error.get("loc") or ()
    field = str(loc[0]) if loc else ""
    variable = str(ctx.get("variable") or field.upper() or "settings")
    if error["type"] == "config":
        return ConfigError(variable, str(ctx["problem"]))
    raw = error.get("input")
    shown = ""
    # value_error messages quote the value themselves when it is safe to show.
    if field not in SECRET_FIELDS and error["type"] != "value_error":
        shown = f", got {str(raw)[:40]!r}" if isinstance(raw, (str, int, float)) else ""
    return ConfigError(variable, _describe(error["type"], ctx, str(error["msg"])) + shown)


def _describe(kind: str, ctx: Mapping[str, Any], msg: str) -> str:
    bounds = {
        "greater_than": "must be greater than {gt}",
        "greater_than_equal": "must be at least {ge}",
        "less_than": "must be less than {lt}",
        "less_than_equal": "must be at most {le}",
    }
    if kind in bounds:
        return bounds[kind].format(**{k: f"{v:g}" for k, v in ctx.items()})
    fixed = {
        "bool_parsing": "must be true or false",
        "bool_type": "must be true or false",
        "int_parsing": "must be a whole number",
        "int_from_float": "must be a whole number",
        "int_type": "must be a whole number",
        "float_parsing": "must be a number",
        "float_type": "must be a number",
        "finite_number": "must be a finite number",
        "literal_error": "must be one of " + str(ctx.get("expected", "")).replace("'", ""),
        "string_type": "must be text",
    }
    if kind in fixed:
        return fixed[kind]
    text = msg.removeprefix("Value error, ")
    return " ".join(text.split())
