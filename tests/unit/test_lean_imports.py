"""The daemon and its API start without the bulk-read libraries: numpy, Arrow and the ADBC driver
(which pulls in pandas or polars when they are installed) cost about 100 MB of RSS, and only
exports and CSV answers need them. They are imported on first use there."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("numpy", "pyarrow", "adbc_driver_manager", "adbc_driver_sqlite", "pandas", "polars")


def test_the_daemon_and_the_api_import_no_bulk_read_library() -> None:
    probe = (
        "import sys\n"
        "import market_data.cli.run, market_data.daemon, market_data.api.app\n"
        "import market_data.storage.sql\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_the_probe_sees_a_bulk_read_library_when_one_is_imported() -> None:
    probe = "import sys\nimport market_data.export.formats\nprint('pyarrow' in sys.modules)\n"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "True"
