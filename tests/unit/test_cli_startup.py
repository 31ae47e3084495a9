"""Every `rtscore` command builds the whole parser first: that must stay cheap."""

from __future__ import annotations

import subprocess
import sys


def test_building_the_parser_imports_no_heavy_library() -> None:
    probe = (
        "import sys; from streams import cli; cli._parser(); "
        "print(','.join(m for m in ('sklearn', 'skops', 'faust', 'scipy') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "", f"building the CLI parser imported {loaded}"
