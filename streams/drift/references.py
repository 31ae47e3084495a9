"""Which reference profile a window is compared with: the profile of the model version that
decided its first prediction. Versions are read from the registry on first use and kept, so
a promotion needs no restart of the drift processor."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from models.registry import Registry
from streams.drift.histogram import Layout
from streams.drift.report import Reference
from streams.errors import ConfigError, RtscoreError
from streams.pipeline import Pipeline

log = logging.getLogger(__name__)

Decider = tuple[str, int]  # (model_name, model_version) of a prediction
# The usable reference of a version; raises (ConfigError, RegistryError, ...) when there is none.
Loader = Callable[[str, int], Reference]
# Errors that make one version's profile unusable, but not the drift processor.
UNUSABLE = (RtscoreError, OSError, ValueError, KeyError, TypeError)


def reference_from_profile(
    name: str,
    version: int,
    profile: Mapping[str, Any] | None,
    feature_names: Sequence[str],
    categorical: Sequence[str],
    source: str = "the pipeline",
) -> Reference:
    """``profile`` as a Reference, refused (ConfigError) when absent or when it describes other
    features or other categorical features than the pipeline: its bins would not fit the rows."""
    if profile is None:
        raise ConfigError(
            f"{name} v{version} has no reference profile to compare with",
            hint="train it again with `rtscore train` (it stores one) and promote it",
        )
    if profile.get("feature_names") != list(feature_names):
        raise ConfigError(
            f"the profile of {name} v{version} describes other features than {source}",
            hint="retrain with `rtscore train`, or promote a version trained on this pipeline",
        )
    declared = set(categorical)
    profiled = {n for n, f in profile["features"].items() if f.get("kind") == "categorical"}
    if declared != profiled:
        raise ConfigError(
            f"{source} [drift] categorical is {sorted(declared)} but the profile of "
            f"{name} v{version} has category frequencies for {sorted(profiled)}",
            hint="retrain with `rtscore train` after changing [drift] categorical",
        )
    layout = Layout.from_profile(profile, list(feature_names))
    return Reference(name, version, profile, layout)


def registry_loader(registry: Registry, pipeline: Pipeline, categorical: Sequence[str]) -> Loader:
    """A Loader reading versions' profiles from ``registry``, checked against ``pipeline``."""

    def load(name: str, version: int) -> Reference:
        mv = registry.resolve(name, version)
        profile = registry.profile(name, mv.version)
        if profile is None and (mv.path / "profile.json").exists():
            # stored by an rtscore that did not record its digest yet
            profile = json.loads((mv.path / "profile.json").read_text())
        return reference_from_profile(
            mv.name, mv.version, profile, pipeline.feature_names, categorical, str(pipeline.source)
        )

    return load


class References:
    """References by version, loaded once each. A version whose profile cannot be used is
    compared with the champion's of the processor's start (warned once, ``on_fallback`` called)
    rather than stopping the processor or dropping its rows."""

    def __init__(
        self,
        champion: Reference,
        load: Loader,
        on_fallback: Callable[[str, int], None] | None = None,
    ) -> None:
        self.champion = champion
        self._load = load
        self._on_fallback = on_fallback
        self._cache: dict[Decider, Reference] = {
            (champion.model_name, champion.model_version): champion
        }

    def get(self, name: str, version: int) -> Reference:
        key = (name, int(version))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        try:
            ref = self._load(*key)
        except UNUSABLE as exc:
            c = self.champion
            log.warning(
                "drift: cannot compare windows with %s v%d's profile: %s. They are compared with "
                "%s v%d's, the champion when this drift processor started. To compare windows with "
                "the profile of the model that decided them, serve versions that `rtscore train` "
                "trained on this pipeline (it stores their profile)",
                name, key[1], exc, c.model_name, c.model_version,
            )  # fmt: skip
            if self._on_fallback is not None:
                self._on_fallback(name, key[1])
            ref = c
        self._cache[key] = ref
        return ref


def first_deciders(windows: Sequence[int], deciders: Sequence[Decider]) -> dict[int, Decider]:
    """Per window, the version that decided its first row in batch order: what the window is
    pinned to when this batch is the first to count rows into it."""
    out: dict[int, Decider] = {}
    for window, decider in zip(windows, deciders, strict=True):
        out.setdefault(window, decider)
    return out
