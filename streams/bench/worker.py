"""The contenders as child processes: the real ``rtscore worker`` (its scoring processor) and
the bench's own ceiling and naive loops, with their settings in the environment."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

from streams.settings import Settings


@functools.cache
def _worker_options() -> str:
    """``rtscore worker --help``: the options the worker of this checkout takes."""
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout


def argv_for(kind: str, processors: tuple[str, ...] = ("scoring",)) -> list[str]:
    """The command of a contender: ``rtscore worker`` (only the named processors when the
    worker runs several) or ``python -m streams.bench.child ceiling|naive``."""
    if kind != "rtscore":
        return [sys.executable, "-m", "streams.bench.child", kind]
    argv = [sys.executable, "-m", "streams.cli", "worker"]
    if "--processors" in _worker_options():
        argv += ["--processors", ",".join(processors)]
    return argv


class ContenderProcess:
    def __init__(self, argv: list[str], settings: Settings, log_path: Path) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **settings.as_env(), "RTSCORE_METRICS_PORT": "0"}
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
