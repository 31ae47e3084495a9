"""The local infrastructure launcher: a single-node Kafka (KRaft) and a Redis for development.

``up`` starts what is missing and reuses what already answers, ``down`` stops only what
``up`` started, ``status`` reports; ``rtscore infra up|down|status`` calls them.
"""

from streams.localinfra.launcher import down, status, up
from streams.localinfra.service import ServiceStatus

__all__ = ["ServiceStatus", "down", "status", "up"]
