"""``python -m streams.bench.child ceiling|naive|overlap``: one contender as its own process
(settings from the ``RTSCORE_*`` environment), so its CPU and memory are its own; stops on
SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

from streams.bench.ceiling import run_ceiling
from streams.bench.naive import run_naive
from streams.bench.overlap import run_overlap
from streams.settings import Settings

CONTENDERS = {"ceiling": run_ceiling, "naive": run_naive, "overlap": run_overlap}


async def _main(name: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await CONTENDERS[name](Settings(), stop)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1]))
