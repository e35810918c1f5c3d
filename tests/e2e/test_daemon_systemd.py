"""systemd/market-data.service: clean under `systemd-analyze verify`, with the settings the
daemon relies on (SIGTERM, a stop timeout above the daemon's 10 s, the state directory)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "market-data.service"


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_unit_declares_what_the_daemon_needs() -> None:
    service = _service()
    assert service["ExecStart"].endswith("-m market_data.daemon")
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > 10
    assert service["Restart"] == "on-failure"
    assert service["StateDirectory"] == "market-data"
    assert "DATABASE_URL=sqlite:////var/lib/market-data/market_data.db" in UNIT.read_text()
    assert service["EnvironmentFile"].startswith("-/etc/market-data/")
    for hardening in (
        "NoNewPrivileges",
        "ProtectSystem",
        "PrivateTmp",
        "ProtectHome",
        "RestrictAddressFamilies",
        "LockPersonality",
        "SystemCallFilter",
    ):
        assert hardening in service, hardening


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here"
)
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    # The unit names the installed interpreter; point it at this one so verify can check it.
    unit = tmp_path / "market-data.service"
    unit.write_text(UNIT.read_text().replace("/opt/market-data/.venv/bin/python", sys.executable))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "market-data.service" in line
    ]
    assert result.returncode == 0, result.stdout + result.stderr
    assert not problems, problems
