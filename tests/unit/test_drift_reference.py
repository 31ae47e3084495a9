"""The drift processor compares with the champion's stored profile, and refuses without one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from models.profile import build_profile
from models.registry import Registry
from streams.drift.serve import champion_reference
from streams.errors import ConfigError
from streams.pipeline import load_pipeline
from streams.settings import Settings


def _register(settings: Settings, names: list[str], profile_names: list[str] | None) -> None:
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (300, len(names)))
    y = (X[:, 0] > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    registry = Registry(settings.registry_root)
    profile = (
        build_profile(X, profile_names, model.predict_proba(X)[:, 1], y)
        if profile_names is not None
        else None
    )
    version = registry.register(
        pipeline.model_name,
        model,
        {
            "feature_names": names,
            "feature_spec_hash": pipeline.feature_spec_hash,
            "metrics": {},
            "training_data": {},
        },
        profile=profile,
    )
    registry.set_alias(pipeline.model_name, "champion", version.version)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, metrics_port=0)


def test_the_champions_profile_is_the_reference(settings: Settings) -> None:
    names = load_pipeline(settings.pipeline, settings.schemas_dir).feature_names
    _register(settings, names, names)
    ref = champion_reference(settings, load_pipeline(settings.pipeline, settings.schemas_dir))
    assert (ref.model_name, ref.model_version) == ("fraud", 1)
    assert [c.name for c in ref.layout.columns] == names


def test_a_champion_without_a_profile_is_refused(settings: Settings) -> None:
    names = load_pipeline(settings.pipeline, settings.schemas_dir).feature_names
    _register(settings, names, None)
    with pytest.raises(ConfigError, match="has no reference profile") as exc:
        champion_reference(settings, load_pipeline(settings.pipeline, settings.schemas_dir))
    assert "rtscore train" in (exc.value.hint or "")


def test_a_profile_of_other_features_is_refused(settings: Settings) -> None:
    names = load_pipeline(settings.pipeline, settings.schemas_dir).feature_names
    _register(settings, names, [f"other_{n}" for n in names])
    with pytest.raises(ConfigError, match="describes other features"):
        champion_reference(settings, load_pipeline(settings.pipeline, settings.schemas_dir))


def test_categorical_features_must_match_the_profile(settings: Settings, tmp_path: Path) -> None:
    names = load_pipeline(settings.pipeline, settings.schemas_dir).feature_names
    _register(settings, names, names)  # profiled without categorical features
    text = settings.pipeline.read_text().replace(
        "categorical = []", 'categorical = ["TX_DURING_WEEKEND"]', 1
    )
    assert 'categorical = ["TX_DURING_WEEKEND"]' in text
    pipeline_file = tmp_path / "fraud.toml"
    pipeline_file.write_text(text)
    with pytest.raises(ConfigError, match="category frequencies"):
        champion_reference(settings, load_pipeline(pipeline_file, settings.schemas_dir))
