"""How an outcome labels a prediction: the pipeline's ``[join]`` table, and the one rule that
the join processor, training sets and backtests all apply.

The rule: an event is labelled by the *first* outcome of its id whose outcome time is within
``max_delay`` of the event's time (later copies and later outcomes are ignored, as the
label-based features ignore them). An event with no such outcome gets the ``on_missing``
policy once its window has closed: ``negative`` (for fraud: no chargeback in time means
legitimate) or ``unlabeled`` (kept, with no label, and left out of the metrics).

``grace`` is how far behind in event time the streams may arrive out of order: the join
closes an event's window only once its watermark is ``grace`` past the window's end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from streams.errors import ConfigError
from streams.features.spec import parse_duration

OnMissing = Literal["negative", "unlabeled"]
DEFAULT_MAX_DELAY_MS = 30 * 86_400_000
DEFAULT_GRACE_MS = 3_600_000


@dataclass(frozen=True)
class JoinPolicy:
    max_delay_ms: int = DEFAULT_MAX_DELAY_MS
    on_missing: OnMissing = "negative"
    grace_ms: int = DEFAULT_GRACE_MS

    def in_window(self, event_time_ms: int, outcome_time_ms: int) -> bool:
        """Whether an outcome at ``outcome_time_ms`` may label an event at ``event_time_ms``."""
        return outcome_time_ms - event_time_ms <= self.max_delay_ms

    def window_end_ms(self, event_time_ms: int) -> int:
        """The event time after which an event with no outcome gets ``on_missing``."""
        return event_time_ms + self.max_delay_ms

    def missing_label(self) -> int | None:
        return 0 if self.on_missing == "negative" else None


def parse_join(raw: dict[str, Any], where: str) -> JoinPolicy:
    """The ``[join]`` table of a pipeline file (absent: the defaults above)."""
    unknown = set(raw) - {"max_delay", "on_missing", "grace"}
    if unknown:
        raise ConfigError(
            f"{where}: [join] has unknown keys {sorted(unknown)}",
            hint='[join] takes max_delay (e.g. "30d"), on_missing ("negative"|"unlabeled") '
            'and grace (e.g. "1h")',
        )
    max_delay_ms = (
        parse_duration(raw["max_delay"], f"{where} [join] max_delay")
        if "max_delay" in raw
        else DEFAULT_MAX_DELAY_MS
    )
    if max_delay_ms <= 0:
        raise ConfigError(f"{where}: [join] max_delay must be positive")
    on_missing = raw.get("on_missing", "negative")
    if on_missing not in ("negative", "unlabeled"):
        raise ConfigError(
            f"{where}: [join] on_missing is {on_missing!r}",
            hint='write on_missing = "negative" (no outcome in time means the negative class) '
            'or "unlabeled" (kept without a label)',
        )
    grace_ms = (
        parse_duration(raw["grace"], f"{where} [join] grace")
        if "grace" in raw
        else DEFAULT_GRACE_MS
    )
    if grace_ms < 0:
        raise ConfigError(f"{where}: [join] grace must not be negative")
    return JoinPolicy(max_delay_ms, on_missing, grace_ms)


def join_policy(pipeline: Any) -> JoinPolicy:
    """The join policy of a loaded :class:`streams.pipeline.Pipeline`."""
    return parse_join(pipeline.sections.get("join", {}), str(pipeline.source))
