"""`rtscore worker`: run the pipeline's stream processors — scoring, the outcome join, drift.

Each processor is its own faust app with its own consumer group, so each scales, lags and
fails on its own (a drift bug never stalls scoring) and each gets a core of its own. One
processor runs in this process; several run as one child process each, under a small
supervisor that forwards SIGINT/SIGTERM and restarts a child that dies unexpectedly.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from streams.errors import ConfigError
from streams.pipeline import Pipeline
from streams.settings import Settings

log = logging.getLogger(__name__)

# name -> "module:function" taking the Settings; imported only when that processor runs.
PROCESSORS: dict[str, str] = {
    "scoring": "streams.serve:run_worker",
    "join": "streams.join.serve:run_join",
    "drift": "streams.drift.serve:run_drift",
}
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_AFTER_S = 60.0  # a child that ran this long starts its backoff afresh
STOP_GRACE_S = 90.0  # faust's own shutdown can take ~1 min while the broker is down


def processors_for(pipeline: Pipeline, requested: Sequence[str] | None) -> list[str]:
    """The processors to run: the requested ones, or every one the pipeline can use."""
    if requested:
        unknown = [p for p in requested if p not in PROCESSORS]
        if unknown:
            raise ConfigError(
                f"unknown processor(s) {', '.join(unknown)}",
                hint=f"choose from {', '.join(PROCESSORS)}",
            )
        if "join" in requested and pipeline.outcomes is None:
            raise ConfigError(
                f"{pipeline.source} declares no [outcomes]: there is nothing to join",
                hint="add an [outcomes] table, or run --processors scoring,drift",
            )
        return list(dict.fromkeys(requested))
    return [p for p in PROCESSORS if p != "join" or pipeline.outcomes is not None]


def run_processor(name: str, settings: Settings) -> None:
    module_name, _, function = PROCESSORS[name].partition(":")
    run: Callable[[Settings], None] = getattr(importlib.import_module(module_name), function)
    run(settings)


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    started: float
    restarts: int = 0
    history: list[float] = field(default_factory=list)


class Supervisor:
    """One child process per processor; restarted with backoff when it dies on its own."""

    def __init__(self, settings: Settings, names: Sequence[str]) -> None:
        self.settings = settings
        self.names = list(names)
        self.children: dict[str, _Child] = {}
        self.stopping = False
        self.exit_code = 0

    def command(self, name: str) -> list[str]:
        return [sys.executable, "-m", "streams.cli", "worker", "--processors", name]

    def _spawn(self, name: str, restarts: int = 0) -> None:
        env = {**os.environ, **self.settings.as_env()}
        proc = subprocess.Popen(self.command(name), env=env)
        self.children[name] = _Child(name, proc, time.monotonic(), restarts)
        log.info("started %s processor (pid %d)", name, proc.pid)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("stopping %s", ", ".join(self.children))
        self.stopping = True
        for child in self.children.values():
            if child.proc.poll() is None:
                child.proc.send_signal(signum)

    def run(self, poll_s: float = 0.5) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for name in self.names:
                self._spawn(name)
            while not self.stopping:
                self._watch()
                time.sleep(poll_s)
            self._wait_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.exit_code

    def _watch(self) -> None:
        for name, child in list(self.children.items()):
            code = child.proc.poll()
            if code is None or self.stopping:
                continue
            ran = time.monotonic() - child.started
            # the n-th crash in a row waits the n-th backoff; a long run starts afresh
            restarts = 1 if ran >= STABLE_AFTER_S else child.restarts + 1
            delay = RESTART_BACKOFF_S[min(restarts, len(RESTART_BACKOFF_S)) - 1]
            log.error(
                "%s processor exited with %s after %.0fs; restarting in %.0fs "
                "(its uncommitted batches are redelivered, outputs are idempotent)",
                name,
                code,
                ran,
                delay,
            )
            self.exit_code = 1
            time.sleep(delay)
            if not self.stopping:
                self._spawn(name, restarts)

    def _wait_all(self) -> None:
        deadline = time.monotonic() + STOP_GRACE_S
        for child in self.children.values():
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s processor did not stop in time; killing it", child.name)
                child.proc.kill()
                child.proc.wait()


def run_processors(settings: Settings, pipeline: Pipeline, requested: Sequence[str] | None) -> int:
    names = processors_for(pipeline, requested)
    if len(names) == 1:
        run_processor(names[0], settings)
        return 0
    log.info("running processors %s, one process each", ", ".join(names))
    return Supervisor(settings, names).run()
