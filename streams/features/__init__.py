"""Features: the declarative spec, stateless columns, the reference definition of windowed
features, the vectorised offline path and the online store — one meaning, several engines."""

from streams.features.stateless import MS_PER_DAY, MS_PER_HOUR, feature_matrix

__all__ = ["MS_PER_DAY", "MS_PER_HOUR", "feature_matrix"]
