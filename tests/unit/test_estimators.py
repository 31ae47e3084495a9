"""The [model] table: estimator, params, standardize, trusted types, evaluation option."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline as SkPipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from models.estimators import EstimatorSpec, ModelConfig, model_config, parse_model
from models.registry import Registry
from models.training import fit
from streams.errors import ConfigError
from streams.pipeline import load_pipeline
from streams.settings import DEMO_PIPELINE, REPO_ROOT


def test_the_demo_declares_the_handbook_protocol() -> None:
    config = model_config(load_pipeline(DEMO_PIPELINE, REPO_ROOT / "schemas"))
    assert config == ModelConfig(EstimatorSpec("logistic_regression"), True)


def test_defaults_and_builtins() -> None:
    assert parse_model({}, "p.toml") == ModelConfig(EstimatorSpec(), False)
    lr = EstimatorSpec().build()
    assert isinstance(lr, SkPipeline)
    assert [type(step) for _, step in lr.steps] == [StandardScaler, LogisticRegression]
    assert lr.named_steps["model"].get_params() == LogisticRegression().get_params()

    rf = parse_model({"estimator": "random_forest", "params": {"max_depth": 4}}, "p.toml")
    model = rf.spec.build().named_steps["model"]
    assert isinstance(model, RandomForestClassifier)
    # the protocol's settings, with the table's params on top
    assert (model.n_estimators, model.random_state, model.n_jobs, model.max_depth) == (
        100,
        0,
        1,
        4,
    )
    assert rf.spec.trusted == []  # built-ins need nothing beyond the registry's own list


def test_a_dotted_class_with_params_and_no_scaler() -> None:
    raw = {
        "estimator": "sklearn.tree.DecisionTreeClassifier",
        "params": {"max_depth": 2, "random_state": 0},
        "standardize": False,
        "trusted_types": ["mypkg.Extra"],
    }
    spec = parse_model(raw, "p.toml").spec
    model = spec.build()
    assert isinstance(model, DecisionTreeClassifier) and model.max_depth == 2
    # the class the pipeline names is trusted by being named; plus the declared ones
    assert spec.trusted == ["mypkg.Extra", "sklearn.tree.DecisionTreeClassifier"]
    assert spec.describe() == {
        "estimator": "sklearn.tree.DecisionTreeClassifier",
        "params": {"max_depth": 2, "random_state": 0},
        "standardize": False,
    }


def test_the_command_line_estimator_overrides_the_table() -> None:
    config = parse_model({"estimator": "logistic_regression", "params": {"C": 0.5}}, "p.toml")
    assert config.with_estimator(None) is config
    assert config.with_estimator("logistic_regression") is config
    rf = config.with_estimator("random_forest")
    # the table's params belong to its own estimator
    assert rf.spec == EstimatorSpec("random_forest", {}, True, ())
    with pytest.raises(ConfigError, match="--estimator 'svm' is not a known estimator"):
        config.with_estimator("svm")


@pytest.mark.parametrize(
    ("raw", "needle", "hint"),
    [
        ({"estimator": "svm"}, "'svm' is not a known estimator", 'estimator = "logistic_re'),
        ({"estimator": 3}, "estimator is 3", "dotted path"),
        ({"estimator": "nowhere.Classifier"}, "cannot be imported", "install the package"),
        ({"estimator": "sklearn.preprocessing.StandardScaler"}, "not a classifier", "dotted"),
        ({"estimator": "os.system"}, "not a classifier", "dotted"),
        ({"params": "C=1"}, "params is 'C=1'", "params = { C = 0.5 }"),
        ({"standardize": "yes"}, "standardize is 'yes'", "standardize = true or false"),
        ({"evaluate_exclude_known_positives": 1}, "evaluate_exclude", "true or false"),
        ({"trusted_types": "a.B"}, "trusted_types is 'a.B'", "a list of class names"),
        ({"trusted_types": ["builtins.eval"]}, "never trusted", "you wrote or reviewed"),
        ({"estimater": "random_forest"}, "unknown keys", "estimator"),
    ],
)
def test_bad_values_say_what_to_write(raw: dict[str, object], needle: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=needle) as err:
        parse_model(raw, "p.toml")
    assert "p.toml" in err.value.message
    assert err.value.hint is not None and hint in err.value.hint


def test_bad_params_are_refused_when_building_or_fitting() -> None:
    X = np.random.default_rng(0).normal(size=(40, 2))
    y = np.arange(40) % 2
    with pytest.raises(ConfigError, match="do not fit logistic_regression") as err:
        EstimatorSpec("logistic_regression", {"depth": 3}).build()
    assert err.value.hint is not None and "LogisticRegression" in err.value.hint
    with pytest.raises(ConfigError, match="params of random_forest are invalid"):
        fit(X, y, EstimatorSpec("random_forest", {"n_estimators": 0}))


def test_a_dotted_estimator_trains_registers_and_loads(tmp_path: Path) -> None:
    # A class outside skops' defaults would be refused unless trusted: the spec trusts the
    # class it names, and registering with spec.trusted lets it through.
    spec = EstimatorSpec("sklearn.tree.DecisionTreeClassifier", {"random_state": 0})
    spec = dataclasses.replace(spec, standardize=False)
    X = np.random.default_rng(1).normal(size=(60, 2))
    y = (X[:, 0] > 0).astype(np.int64)
    model = fit(X, y, spec)
    registry = Registry(tmp_path)
    meta = {"feature_names": ["a", "b"], "feature_spec_hash": "0", "metrics": {}}
    mv = registry.register("m", model, {**meta, "training_data": {}}, trusted=spec.trusted)
    assert mv.metadata["artifact"]["trusted_types"] == ["sklearn.tree._tree.Tree"]
    np.testing.assert_array_equal(
        registry.load("m", 1).estimator.predict_proba(X), model.predict_proba(X)
    )
