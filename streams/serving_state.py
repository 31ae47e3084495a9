"""What a model serves: its aliases, the A/B split and the shadows, as one value (a ModelEvent).

Pure: the changes ``rtscore model`` makes are functions from one state to the next, and
:meth:`ServingState.problems` says what makes a state unservable. Publishing and following
the compacted topic is :mod:`streams.model_events`; loading the versions is
:mod:`streams.hot_swap`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class ServingState:
    """The whole desired serving state of one model (schemas/model_event.avsc)."""

    model_name: str
    aliases: Mapping[str, int]  # alias -> version, of the aliases that serve
    feature_spec_hash: str
    split: Mapping[str, float] = field(default_factory=dict)  # alias -> weight (A/B arms)
    shadows: Mapping[str, float] = field(default_factory=dict)  # alias -> share of events
    action: str = "registry"
    detail: str = ""
    actor: str = ""
    time_ms: int = 0

    @property
    def serving(self) -> tuple[Any, ...]:
        """What decides scoring; two states with equal ``serving`` score the same way."""
        return (
            self.model_name,
            tuple(sorted(self.aliases.items())),
            tuple(sorted(self.split.items())),
            tuple(sorted(self.shadows.items())),
        )

    def arms(self) -> list[tuple[str, float]]:
        """(alias, weight) of the arms that get traffic, sorted by alias (stable assignment)."""
        if not self.split:
            return [(CHAMPION, 1.0)]
        return [(alias, w) for alias, w in sorted(self.split.items()) if w > 0]

    def shadow_shares(self) -> list[tuple[str, float]]:
        return [(alias, s) for alias, s in sorted(self.shadows.items()) if s > 0]

    def used_aliases(self) -> list[str]:
        """Aliases whose versions a worker must load to serve this state."""
        used = {alias for alias, _ in self.arms()} | {alias for alias, _ in self.shadow_shares()}
        return sorted(used)

    def problems(self) -> list[str]:
        """Why this state cannot be served (empty when it can)."""
        out: list[str] = []
        if CHAMPION not in self.aliases:
            out.append(f"model {self.model_name} has no champion")
        for alias, version in self.aliases.items():
            if not isinstance(version, int) or version < 1:
                out.append(f"alias {alias} points at {version!r}, not a version number")
        for alias, weight in self.split.items():
            if alias not in self.aliases:
                out.append(f"split arm {alias} is not a serving alias ({_names(self.aliases)})")
            if not math.isfinite(weight) or weight < 0:
                out.append(f"split weight of {alias} is {weight}; weights are >= 0")
        if self.split and not sum(w for w in self.split.values() if math.isfinite(w)) > 0:
            out.append("split weights add up to 0: no arm would get traffic")
        for alias, share in self.shadows.items():
            if alias not in self.aliases:
                out.append(f"shadow {alias} is not a serving alias ({_names(self.aliases)})")
            if not (math.isfinite(share) and 0 <= share <= 1):
                out.append(f"shadow share of {alias} is {share}; a share is in [0, 1]")
        return out

    def describe(self) -> str:
        """One line: who serves, how traffic splits, who scores in shadow."""
        versions = ", ".join(f"{a}=v{v}" for a, v in sorted(self.aliases.items()))
        text = f"{self.model_name}: {versions}"
        if self.split:
            total = sum(self.split.values()) or 1.0
            text += "; split " + ", ".join(
                f"{a} {100 * w / total:g}%" for a, w in sorted(self.split.items())
            )
        if self.shadows:
            text += "; shadow " + ", ".join(
                f"{a} {100 * s:g}%" for a, s in sorted(self.shadows.items())
            )
        return text

    def to_record(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "aliases": dict(self.aliases),
            "split": {a: float(w) for a, w in self.split.items()},
            "shadows": {a: float(s) for a, s in self.shadows.items()},
            "feature_spec_hash": self.feature_spec_hash,
            "action": self.action,
            "detail": self.detail,
            "actor": self.actor,
            "time": self.time_ms,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ServingState:
        return cls(
            model_name=record["model_name"],
            aliases=dict(record["aliases"]),
            feature_spec_hash=record["feature_spec_hash"],
            split=dict(record["split"]),
            shadows=dict(record["shadows"]),
            action=record["action"],
            detail=record["detail"],
            actor=record["actor"],
            time_ms=record["time"],
        )


def with_alias(state: ServingState, alias: str, version: int) -> ServingState:
    return dataclasses.replace(state, aliases={**state.aliases, alias: version})


def without_alias(state: ServingState, alias: str) -> ServingState:
    """``alias`` stops serving: out of the aliases, the split and the shadows (a split left
    with the champion alone is no split)."""
    split = {a: w for a, w in state.split.items() if a != alias}
    return dataclasses.replace(
        state,
        aliases={a: v for a, v in state.aliases.items() if a != alias},
        split={} if set(split) <= {CHAMPION} else split,
        shadows={a: s for a, s in state.shadows.items() if a != alias},
    )


def with_split(state: ServingState, weights: Mapping[str, float]) -> ServingState:
    """A/B arms (empty: no split, the champion takes every event)."""
    return dataclasses.replace(state, split=dict(weights))


def with_shadows(state: ServingState, shares: Mapping[str, float]) -> ServingState:
    """Shadow scoring (empty: none)."""
    return dataclasses.replace(state, shadows=dict(shares))


def parse_weights(items: list[str], what: str) -> dict[str, float]:
    """``["champion=90", "challenger=10"]`` -> ``{"champion": 90.0, "challenger": 10.0}``."""
    out: dict[str, float] = {}
    for item in items:
        alias, sep, number = item.partition("=")
        try:
            if not sep or not alias:
                raise ValueError(item)
            out[alias] = float(number)
        except ValueError:
            raise ValueError(f"{item!r} is not ALIAS={what} (e.g. challenger=0.5)") from None
    return out


def _names(aliases: Mapping[str, int]) -> str:
    return ", ".join(sorted(aliases)) or "none"
