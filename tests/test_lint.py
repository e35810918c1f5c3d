"""The code stays clean: ruff lint and ruff format over everything, mypy (strict on src/) as
configured in pyproject."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(tool: str, *args: str) -> None:
    executable = BIN / tool
    if not executable.exists():
        pytest.fail(f"{tool} is not installed next to {sys.executable}; install '.[dev]'")
    result = subprocess.run(
        [str(executable), *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    command = " ".join((tool, *args))
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}{result.stderr}"


def _paths() -> list[str]:
    # bench/ may not exist in every checkout stage; ruff refuses a missing path.
    return [p for p in ("src", "tests", "bench") if (ROOT / p).exists()]


def test_ruff() -> None:
    _run("ruff", "check", *_paths())


def test_ruff_format() -> None:
    # One layout for everyone: `ruff format` (configured in pyproject) leaves every file as is.
    _run("ruff", "format", "--check", *_paths())


def test_mypy() -> None:
    _run("mypy")
