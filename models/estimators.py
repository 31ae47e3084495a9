"""The ``[model]`` table of a pipeline file: which estimator to train, with which parameters,
which extra types its artifact may hold, and how to evaluate it.

```
[model]
name = "fraud"
estimator = "logistic_regression"   # "random_forest", or "package.module.AClassifier"
params = { C = 1.0 }                # constructor arguments of that estimator
standardize = true                  # StandardScaler before it (fit on the training rows)
trusted_types = []                  # other classes its artifact holds (your own code)
evaluate_exclude_known_positives = false
```
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from typing import Any

from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline as SkPipeline
from sklearn.preprocessing import StandardScaler

from models import artifact
from streams.errors import ConfigError, RegistryError

# The handbook's settings (fraud-demo note): LR with scikit-learn's defaults; a forest of 100
# trees with no depth limit, random_state 0. n_jobs=1 keeps training reproducible and polite.
BUILTIN: dict[str, tuple[type, dict[str, Any]]] = {
    "logistic_regression": (LogisticRegression, {}),
    "random_forest": (
        RandomForestClassifier,
        {"n_estimators": 100, "random_state": 0, "n_jobs": 1},
    ),
}
_KEYS = {
    "name", "estimator", "params", "standardize", "trusted_types",
    "evaluate_exclude_known_positives",
}  # fmt: skip
_WHAT_TO_WRITE = (
    'write estimator = "logistic_regression", "random_forest" or the dotted path of a '
    'classifier class, e.g. "sklearn.ensemble.HistGradientBoostingClassifier"'
)


@dataclass(frozen=True)
class EstimatorSpec:
    """What to fit: a built-in name or a class's dotted path, its parameters, preprocessing."""

    estimator: str = "logistic_regression"
    params: dict[str, Any] = field(default_factory=dict)
    standardize: bool = True
    trusted_types: tuple[str, ...] = ()  # declared in [model]; the named class is added

    @property
    def trusted(self) -> list[str]:
        """Types the artifact may hold beyond skops' defaults (a custom class is trusted by
        being named: the pipeline's author chose to run it)."""
        named = () if self.estimator in BUILTIN else (self.estimator,)
        return sorted({*self.trusted_types, *named})

    def build(self) -> Any:
        """An unfitted estimator, in a Pipeline after a StandardScaler when ``standardize``."""
        if self.estimator in BUILTIN:
            cls, defaults = BUILTIN[self.estimator]
        else:
            cls, defaults = _import_class(self.estimator), {}
        try:
            model = cls(**{**defaults, **self.params})
        except TypeError as exc:
            raise ConfigError(
                f"[model] params {self.params} do not fit {self.estimator}: {exc}",
                hint=f"use the constructor arguments of {cls.__module__}.{cls.__qualname__}",
            ) from exc
        if not self.standardize:
            return model
        return SkPipeline([("scaler", StandardScaler()), ("model", model)])

    def describe(self) -> dict[str, Any]:
        return {
            "estimator": self.estimator,
            "params": self.params,
            "standardize": self.standardize,
        }


@dataclass(frozen=True)
class ModelConfig:
    """The parsed ``[model]`` table."""

    spec: EstimatorSpec = field(default_factory=EstimatorSpec)
    # Test rows of an entity with a positive label known before the row's day (from the
    # first training day on) are left out of the evaluation: the handbook's "known
    # compromised cards", which a deployment would already have blocked.
    exclude_known_positives: bool = False

    def with_estimator(self, estimator: str | None) -> ModelConfig:
        """The config with the estimator overridden (``rtscore train --estimator``): the
        table's params belong to its own estimator, so another one gets its defaults."""
        if estimator is None or estimator == self.spec.estimator:
            return self
        _check_estimator(estimator, "--estimator")
        return replace(self, spec=replace(self.spec, estimator=estimator, params={}))


def parse_model(raw: dict[str, Any], where: str) -> ModelConfig:
    """The ``[model]`` table (absent keys: logistic regression, standardised, no exclusion)."""
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigError(
            f"{where}: [model] has unknown keys {sorted(unknown)}",
            hint=f"[model] takes {', '.join(sorted(_KEYS))}",
        )
    estimator = raw.get("estimator", "logistic_regression")
    _check_estimator(estimator, f"{where}: [model] estimator")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(
            f"{where}: [model] params is {params!r}",
            hint="write params as a table of constructor arguments, e.g. params = { C = 0.5 }",
        )
    flags = {}
    for key, default in (("standardize", True), ("evaluate_exclude_known_positives", False)):
        flags[key] = raw.get(key, default)
        if not isinstance(flags[key], bool):
            raise ConfigError(
                f"{where}: [model] {key} is {flags[key]!r}", hint=f"write {key} = true or false"
            )
    trusted = raw.get("trusted_types", [])
    if not isinstance(trusted, list):
        raise ConfigError(
            f"{where}: [model] trusted_types is {trusted!r}",
            hint='write a list of class names, e.g. trusted_types = ["mypkg.MyTransformer"]',
        )
    try:
        trusted = artifact.check_trusted(trusted, where=f"{where}: [model] trusted_types")
    except RegistryError as exc:
        raise ConfigError(exc.message, hint=exc.hint) from exc
    spec = EstimatorSpec(estimator, dict(params), flags["standardize"], tuple(trusted))
    return ModelConfig(spec, flags["evaluate_exclude_known_positives"])


def model_config(pipeline: Any, estimator: str | None = None) -> ModelConfig:
    """The ``[model]`` table of a loaded :class:`streams.pipeline.Pipeline`, ``estimator``
    overriding its estimator when given."""
    raw = pipeline.sections.get("model", {})
    return parse_model(raw, str(pipeline.source)).with_estimator(estimator)


def _check_estimator(estimator: Any, where: str) -> None:
    if not isinstance(estimator, str) or not estimator:
        raise ConfigError(f"{where} is {estimator!r}", hint=_WHAT_TO_WRITE)
    if estimator not in BUILTIN and "." not in estimator:
        raise ConfigError(f"{where} {estimator!r} is not a known estimator", hint=_WHAT_TO_WRITE)
    if estimator not in BUILTIN:
        _import_class(estimator, where)


def _import_class(path: str, where: str = "[model] estimator") -> type:
    module_name, _, attr = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"{where} {path!r} cannot be imported: {exc}",
            hint=f"install the package that defines it, or fix the path; {_WHAT_TO_WRITE}",
        ) from exc
    if not isinstance(cls, type) or not callable(getattr(cls, "predict_proba", None)):
        raise ConfigError(
            f"{where} {path!r} is not a classifier class with predict_proba",
            hint=_WHAT_TO_WRITE,
        )
    try:
        artifact.check_trusted([path], where=where)
    except RegistryError as exc:
        raise ConfigError(exc.message, hint=exc.hint) from exc
    return cls
