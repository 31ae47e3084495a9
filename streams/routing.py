"""Which loaded model scores which event: A/B arms by a stable hash of the entity key, shadow
samples by a stable hash of the event id.

The hashes depend only on the model name, the alias and the key, so an entity's arm is the
same on every worker and partition and across restarts (sticky), and a redelivered event is
sampled the same way. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_SCALE = float(2**64)


@dataclass(frozen=True)
class ServingModel:
    """A loaded model version with the names a prediction must carry (invariant 6)."""

    name: str
    version: int
    variant: str  # the alias it serves under: champion, challenger, …
    estimator: Any  # has predict_proba


@dataclass(frozen=True)
class Shadow:
    model: ServingModel
    share: float  # of events, in [0, 1]


@dataclass(frozen=True)
class Routing:
    """The arms (with weights) and shadows one micro-batch is scored with; swapped whole."""

    arms: tuple[ServingModel, ...]
    weights: tuple[float, ...]
    shadows: tuple[Shadow, ...] = ()

    def __post_init__(self) -> None:
        if not self.arms or len(self.arms) != len(self.weights) or not sum(self.weights) > 0:
            raise ValueError("a routing needs arms with weights adding up to more than 0")

    @classmethod
    def single(cls, model: ServingModel) -> Routing:
        return cls((model,), (1.0,))

    @property
    def champion(self) -> ServingModel:
        """The arm with the largest weight (the one named in logs)."""
        return self.arms[int(np.argmax(self.weights))]

    def assign(self, entity_keys: Sequence[str]) -> np.ndarray:
        """Index into ``arms`` for each entity key."""
        if len(self.arms) == 1:
            return np.zeros(len(entity_keys), dtype=np.intp)
        salt = f"arm\x00{self.arms[0].name}"
        units = np.fromiter((stable_unit(salt, k) for k in entity_keys), float, len(entity_keys))
        return arm_index(units, self.weights)

    def sampled(self, shadow: Shadow, event_ids: Sequence[str]) -> np.ndarray:
        """Which events ``shadow`` scores."""
        n = len(event_ids)
        if shadow.share >= 1.0:
            return np.ones(n, dtype=bool)
        if shadow.share <= 0.0:
            return np.zeros(n, dtype=bool)
        salt = f"shadow\x00{shadow.model.name}\x00{shadow.model.variant}"
        units = np.fromiter((stable_unit(salt, e) for e in event_ids), float, n)
        return units < shadow.share


def stable_unit(salt: str, key: str) -> float:
    """A number in [0, 1) fixed by ``salt`` and ``key``, uniform over keys."""
    digest = hashlib.blake2b(f"{salt}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def arm_index(units: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Arm of each unit number: arm i takes the slice of [0, 1) of its weight's share."""
    bounds = np.cumsum(np.asarray(weights, dtype=np.float64))
    bounds /= bounds[-1]
    index = np.searchsorted(bounds, units, side="right")
    return np.minimum(index, len(bounds) - 1).astype(np.intp)
