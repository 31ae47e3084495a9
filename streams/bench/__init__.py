"""`rtscore bench`: the ceiling (raw consume -> produce), the naive per-event design and the
real worker, over the same simulated events, in one run (see :mod:`streams.bench.command`)."""

from streams.bench.command import bench_command

__all__ = ["bench_command"]
