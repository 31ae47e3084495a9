"""The one exception tree of rtscore; each error says what failed and what to do.

RtscoreError                      root; ``retriable`` says whether trying again may help
├── ConfigError                   a setting or pipeline file is wrong (not retriable)
├── InfraError                    the local broker / Redis could not be started or reached
├── DependencyUnavailable         Kafka or Redis is down right now (retriable)
├── InvalidEvent                  one input record cannot be scored; goes to the DLQ
└── RegistryError                 a model version is missing, tampered or unloadable
"""

from __future__ import annotations


class RtscoreError(Exception):
    """Root of every error rtscore raises on purpose."""

    retriable: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} — {hint}" if hint else message)


class ConfigError(RtscoreError):
    """A setting, the pipeline file or a command's arguments are wrong."""


class InfraError(RtscoreError):
    """The local infrastructure could not be started, stopped or reached."""


class DependencyUnavailable(RtscoreError):
    """A dependency (Kafka, Redis) is unavailable now; work pauses and is retried."""

    retriable = True


class InvalidEvent(RtscoreError):
    """One input record cannot be scored.

    ``reason`` is a short stable code (used as a metric label and the DLQ's ``reason``),
    ``stage`` where it failed (decode, validate, features, score); the message says what was
    wrong with this record and what the producer should change.
    """

    def __init__(self, reason: str, message: str, *, stage: str = "validate") -> None:
        self.reason = reason
        self.stage = stage
        super().__init__(message)


class RegistryError(RtscoreError):
    """A model version is unknown, its artifact is missing or its hash does not match."""
