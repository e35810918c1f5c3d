"""Which series go to which file, and whether those files can be written at all.

`--output` is read as:
- `-`: standard output (CSV only), every series one after the other;
- a pattern holding `{symbol}` and/or `{timeframe}`: one file per distinct expansion, so
  `out/{symbol}_{timeframe}.parquet` is a file per series and `out/{timeframe}.csv` a file per
  timeframe holding every symbol;
- an existing directory, or a path ending in `/`: `DIR/{symbol}_{timeframe}.<format>` per series;
- anything else: one file holding every series.
Within a file, series follow in the given order and each is ascending by time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from market_data.models import SeriesKey

STDOUT = "-"
PLACEHOLDERS = ("{symbol}", "{timeframe}")
PARTIAL_SUFFIX = ".part"  # written under this name, renamed when complete


class OutputError(ValueError):
    """The output cannot be written (bad usage: exit 2 on the command line)."""


@dataclass(frozen=True, slots=True)
class Target:
    path: str
    series: tuple[SeriesKey, ...]


def plan_targets(output: str, series: Sequence[SeriesKey], extension: str) -> list[Target]:
    if not output.strip():
        raise OutputError("--output is empty")
    if output == STDOUT:
        return [Target(STDOUT, tuple(series))]
    output = os.path.expanduser(output)
    if any(p in output for p in PLACEHOLDERS):
        groups: dict[str, list[SeriesKey]] = {}
        for key in series:
            path = output.replace("{symbol}", key.symbol).replace("{timeframe}", key.timeframe)
            groups.setdefault(path, []).append(key)
        return [Target(path, tuple(keys)) for path, keys in groups.items()]
    if output.endswith(("/", os.sep)) or Path(output).is_dir():
        folder = Path(output)
        return [
            Target(str(folder / f"{key.symbol}_{key.timeframe}.{extension}"), (key,))
            for key in series
        ]
    return [Target(output, tuple(series))]


def check_writable(targets: Sequence[Target]) -> None:
    """Create missing folders and make sure each file can be created, before any reading."""
    for target in targets:
        if target.path == STDOUT:
            continue
        path = Path(target.path)
        if target.path.endswith(("/", os.sep)) or path.is_dir():
            raise OutputError(f"{target.path} is a directory")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
        probe = path.with_name(path.name + PARTIAL_SUFFIX)
        try:
            with open(probe, "wb"):
                pass
            probe.unlink()
        except OSError as exc:
            raise OutputError(f"cannot write {target.path}: {exc.strerror or exc}") from None
