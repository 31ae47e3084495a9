"""Run `rtscore worker` as a real child process for e2e tests, and wait on its output topics."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from streams.settings import Settings
from streams.topics import record_counts


class WorkerProcess:
    def __init__(self, settings: Settings, log_path: Path, processors: str = "scoring") -> None:
        self.settings = settings
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **settings.as_env()}
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker", "--processors", processors],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_outputs(self, expected: int, timeout: float = 120.0) -> dict[str, int]:
        """Wait until predictions + dead letters hold ``expected`` records."""
        topics = self.settings.topics
        deadline = time.monotonic() + timeout
        while True:
            counts = asyncio.run(
                record_counts(self.settings.kafka_bootstrap, [topics.predictions, topics.dlq])
            )
            if sum(counts.values()) >= expected:
                return counts
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timeout with {counts}, want {expected}:\n{self.log_tail()}")
            time.sleep(0.3)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
