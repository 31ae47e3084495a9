"""`rtscore worker` runs each processor in its own process: which ones, restarts, stopping."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from streams import supervise
from streams.errors import ConfigError
from streams.pipeline import load_pipeline
from streams.settings import DEMO_PIPELINE, REPO_ROOT, Settings
from streams.supervise import Supervisor, processors_for

DEMO = load_pipeline(DEMO_PIPELINE, REPO_ROOT / "schemas")


def test_every_processor_by_default_and_join_only_with_outcomes() -> None:
    assert processors_for(DEMO, None) == ["scoring", "join", "drift"]
    no_outcomes = dataclasses.replace(DEMO, outcomes=None)
    assert processors_for(no_outcomes, None) == ["scoring", "drift"]
    assert processors_for(DEMO, ["drift", "scoring", "drift"]) == ["drift", "scoring"]
    with pytest.raises(ConfigError, match="nothing to join"):
        processors_for(no_outcomes, ["join"])
    with pytest.raises(ConfigError, match="choose from scoring, join, drift"):
        processors_for(DEMO, ["scorer"])


class _Scripted(Supervisor):
    """Children are small Python scripts instead of faust workers."""

    def __init__(self, scripts: dict[str, str], tmp: Path) -> None:
        super().__init__(Settings(home=tmp), list(scripts))
        self.scripts = scripts

    def command(self, name: str) -> list[str]:
        return [sys.executable, "-c", self.scripts[name]]


STAYS_UP = (
    "import signal, sys, time, pathlib\n"
    "signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path('{marker}').write_text('stopped'),"
    " sys.exit(0)))\n"
    "while True: time.sleep(0.05)\n"
)


def test_a_dead_child_is_restarted_and_sigterm_reaches_every_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervise, "RESTART_BACKOFF_S", (0.1,))
    runs = tmp_path / "runs"
    runs.mkdir()
    crashes_once = (
        "import pathlib, signal, sys, time, uuid\n"
        f"runs = pathlib.Path({str(runs)!r})\n"
        "first = not any(runs.iterdir())\n"
        "(runs / uuid.uuid4().hex).write_text('x')\n"
        "if first: sys.exit(3)\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path({str(tmp_path / 'b')!r})"
        ".write_text('stopped'), sys.exit(0)))\n"
        "while True: time.sleep(0.05)\n"
    )
    sup = _Scripted({"a": STAYS_UP.format(marker=tmp_path / "a"), "b": crashes_once}, tmp_path)
    stopper = threading.Timer(2.0, lambda: os.kill(os.getpid(), signal.SIGTERM))
    stopper.start()
    started = time.monotonic()
    code = sup.run(poll_s=0.05)
    stopper.join()
    assert time.monotonic() - started < 10
    assert len(list(runs.iterdir())) == 2  # crashed once, restarted once
    assert (tmp_path / "a").read_text() == "stopped"
    assert (tmp_path / "b").read_text() == "stopped"
    assert code == 1  # a crash is reported in the exit code
