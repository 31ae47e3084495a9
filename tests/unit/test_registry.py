"""The model registry on a temporary directory: versions, aliases, integrity (hash, trusted
types, no pickle), reference profiles, lineage, concurrency."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import pickle
import re
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from models.lineage import render
from models.registry import Registry
from models.training import fit
from streams.errors import RegistryError

OWN_CLASS = "tests.unit.test_registry.MeanThreshold"


def _estimator(seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] + rng.normal(scale=0.5, size=60) > 0).astype(np.int64)
    return fit(X, y)


def _metadata(**extra) -> dict:
    return {
        "feature_names": ["a", "b", "c"],
        "feature_spec_hash": "f" * 64,
        "metrics": {"auc_roc": 0.9, "average_precision": float("nan")},
        "training_data": {"topic": "rtscore.events", "partition_offsets": {"0": [0, 60]}},
        **extra,
    }


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def test_round_trip_keeps_the_model_and_its_lineage(registry: Registry) -> None:
    est = _estimator()
    mv = registry.register("fraud", est, _metadata())

    assert (mv.name, mv.version) == ("fraud", 1)
    assert mv.path == registry.root / "fraud" / "1"
    assert sorted(p.name for p in mv.path.iterdir()) == ["metadata.json", "model.skops"]
    meta = json.loads((mv.path / "metadata.json").read_text())
    assert meta == mv.metadata
    assert meta["sha256"] == mv.sha256 and re.fullmatch(r"[0-9a-f]{64}", mv.sha256)
    assert meta["params"]["model__C"] == 1.0 and meta["params"]["model__penalty"] in (
        "l2",
        "deprecated",
    )
    assert meta["metrics"]["average_precision"] == "nan"  # JSON has no NaN
    assert set(meta["libraries"]) == {
        "python",
        "numpy",
        "scikit-learn",
        "scipy",
        "skops",
        "rtscore",
    }
    assert meta["code_version"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}", meta["code_version"])
    assert meta["code_dirty"] in (True, False, None)
    assert meta["artifact"] == {
        "file": "model.skops",
        "format": "skops",
        "trusted_types": [],  # a standardised logistic regression holds only default types
        "bytes": (mv.path / "model.skops").stat().st_size,
    }
    assert "profile_sha256" not in meta and registry.profile("fraud", 1) is None
    assert meta["created_at"].endswith("+00:00")
    assert meta["feature_names"] == ["a", "b", "c"]

    loaded = registry.load("fraud", 1)
    X = np.random.default_rng(1).normal(size=(5, 3))
    np.testing.assert_array_equal(loaded.estimator.predict_proba(X), est.predict_proba(X))
    assert loaded.version == mv
    assert registry.models() == ["fraud"]


def test_versions_are_numbered_in_order(registry: Registry) -> None:
    numbers = [registry.register("fraud", _estimator(i), _metadata()).version for i in range(3)]
    registry.register("other", _estimator(), _metadata())

    assert numbers == [1, 2, 3]
    assert [v.version for v in registry.versions("fraud")] == [1, 2, 3]
    assert registry.models() == ["fraud", "other"]
    assert registry.resolve("fraud", "latest").version == 3


def test_a_version_is_never_overwritten(registry: Registry) -> None:
    first = registry.register("fraud", _estimator(0), _metadata())
    before = {p.name: p.read_bytes() for p in first.path.iterdir()}
    # A claimed but unfinished version (a crashed or in-flight registration) is not a version
    # and its number is not reused.
    (registry.root / "fraud" / "2").mkdir()

    second = registry.register("fraud", _estimator(1), _metadata())

    assert second.version == 3
    assert {p.name: p.read_bytes() for p in first.path.iterdir()} == before
    assert [v.version for v in registry.versions("fraud")] == [1, 3]
    with pytest.raises(RegistryError, match="no version 2"):
        registry.get("fraud", 2)


def test_register_demands_lineage_and_owns_its_own_fields(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="training_data"):
        registry.register("fraud", _estimator(), {"feature_names": [], "metrics": {}})
    with pytest.raises(RegistryError, match="sha256"):
        registry.register("fraud", _estimator(), _metadata(sha256="0" * 64))
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.register("../escape", _estimator(), _metadata())
    assert registry.models() == []


def test_aliases_resolve_and_roll_back_through_their_history(registry: Registry) -> None:
    for i in range(3):
        registry.register("fraud", _estimator(i), _metadata())
    with pytest.raises(RegistryError, match="alias champion not set for fraud") as err:
        registry.load("fraud")
    assert err.value.hint is not None and "rtscore model promote fraud" in err.value.hint

    for version in (1, 2, 3):
        registry.set_alias("fraud", "champion", version)
    registry.set_alias("fraud", "challenger", 1)

    assert registry.resolve("fraud", "champion").version == 3
    assert registry.load("fraud").version.version == 3
    assert [registry.resolve("fraud", ref).version for ref in ("3", 2, "latest")] == [3, 2, 3]

    assert registry.rollback("fraud").version == 2
    assert registry.rollback("fraud", "champion").version == 1
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback("fraud")
    assert registry.aliases("fraud") == {"champion": 1, "challenger": 1}

    history = registry.history("fraud")
    assert [(h["alias"], h["version"], h["action"]) for h in history] == [
        ("champion", 1, "set"),
        ("champion", 2, "set"),
        ("champion", 3, "set"),
        ("challenger", 1, "set"),
        ("champion", 2, "rollback"),
        ("champion", 1, "rollback"),
    ]
    assert all(h["time"].endswith("+00:00") for h in history)
    # The file on disk is the same state (what another process sees).
    on_disk = json.loads((registry.root / "fraud" / "aliases.json").read_text())
    assert on_disk["aliases"] == {"champion": 1, "challenger": 1}


def test_alias_errors_say_what_to_do(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="no model named ghost") as err:
        registry.resolve("ghost", "champion")
    assert err.value.hint == "train one with `rtscore train`"
    registry.register("fraud", _estimator(), _metadata())
    with pytest.raises(RegistryError, match="no version 7"):
        registry.set_alias("fraud", "champion", 7)
    with pytest.raises(RegistryError, match="cannot be an alias"):
        registry.set_alias("fraud", "latest", 1)


def test_a_changed_byte_in_the_artifact_is_refused(registry: Registry) -> None:
    mv = registry.register("fraud", _estimator(), _metadata())
    path = mv.path / "model.skops"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(RegistryError, match="tampered") as err:
        registry.load("fraud", 1)
    assert err.value.hint


class _Payload:
    """Unpickling this creates a file: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_from_an_earlier_rtscore_is_never_unpickled(
    registry: Registry, tmp_path: Path
) -> None:
    mv = registry.register("fraud", _estimator(), _metadata())
    marker = tmp_path / "unpickled"
    blob = pickle.dumps(_Payload(marker))
    # What an earlier rtscore wrote: model.pkl, its sha256 in metadata, no "artifact".
    (mv.path / "model.skops").unlink()
    (mv.path / "model.pkl").write_bytes(blob)
    meta = json.loads((mv.path / "metadata.json").read_text())
    meta["sha256"] = hashlib.sha256(blob).hexdigest()
    del meta["artifact"]
    (mv.path / "metadata.json").write_text(json.dumps(meta))

    with pytest.raises(RegistryError, match="is a pickle") as err:
        registry.load("fraud", 1)
    assert err.value.hint is not None and "rtscore train" in err.value.hint
    assert not marker.exists()


class MeanThreshold(ClassifierMixin, BaseEstimator):
    """A user's own classifier: a class skops does not trust unless told to."""

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        self.cut_ = float(np.mean(X[:, 0]))
        return self

    def predict_proba(self, X):
        p = (X[:, 0] > self.cut_).astype(np.float64) * 0.8 + 0.1
        return np.column_stack([1 - p, p])


def test_an_untrusted_type_is_refused_until_declared(registry: Registry) -> None:
    X = np.random.default_rng(0).normal(size=(20, 3))
    own = MeanThreshold().fit(X, np.arange(20) % 2)

    with pytest.raises(RegistryError, match=re.escape(OWN_CLASS)) as err:
        registry.register("fraud", own, _metadata())
    assert err.value.hint is not None and "trusted_types" in err.value.hint
    assert registry.models() == []  # nothing was written

    mv = registry.register("fraud", own, _metadata(), trusted=[OWN_CLASS])
    assert mv.metadata["artifact"]["trusted_types"] == [OWN_CLASS]
    np.testing.assert_array_equal(
        registry.load("fraud", 1).estimator.predict_proba(X), own.predict_proba(X)
    )

    # The same bytes (hash intact) with the declaration removed from the metadata: refused.
    meta = json.loads((mv.path / "metadata.json").read_text())
    meta["artifact"]["trusted_types"] = []
    (mv.path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(RegistryError, match=f"not declared trusted.*{re.escape(OWN_CLASS)}"):
        registry.load("fraud", 1)


@pytest.mark.parametrize("name", ["builtins.eval", "os.system", "subprocess.Popen", "eval"])
def test_system_names_are_never_trusted(registry: Registry, name: str) -> None:
    with pytest.raises(RegistryError, match=r"never trusted|not a type name"):
        registry.register("fraud", _estimator(), _metadata(), trusted=[name])


def test_a_random_forest_round_trips(registry: Registry) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = (X[:, 0] > 0).astype(np.int64)
    rf = fit(X, y, "random_forest")
    mv = registry.register("fraud", rf, _metadata())
    # Its trees' node storage is trusted by rtscore (hash-checked bytes), not by skops.
    assert mv.metadata["artifact"]["trusted_types"] == ["sklearn.tree._tree.Tree"]
    np.testing.assert_array_equal(
        registry.load("fraud", 1).estimator.predict_proba(X), rf.predict_proba(X)
    )


def test_the_reference_profile_is_stored_and_hash_checked(registry: Registry) -> None:
    profile = {"features": {"a": {"edges": np.array([0.0, 1.0]), "counts": [3, 4]}}, "n": 7}
    mv = registry.register("fraud", _estimator(), _metadata(), profile=profile)

    assert (mv.path / "profile.json").is_file()
    assert re.fullmatch(r"[0-9a-f]{64}", mv.metadata["profile_sha256"])
    registry.set_alias("fraud", "champion", 1)
    expected = {"features": {"a": {"edges": [0.0, 1.0], "counts": [3, 4]}}, "n": 7}
    assert registry.profile("fraud") == expected == registry.profile("fraud", 1)

    text = (mv.path / "profile.json").read_text()
    (mv.path / "profile.json").write_text(text.replace("7", "8"))
    with pytest.raises(RegistryError, match=r"profile\.json has been tampered with"):
        registry.profile("fraud", 1)


def test_describe_names_every_part_of_the_lineage(registry: Registry) -> None:
    registry.register("fraud", _estimator(), _metadata(estimator={"estimator": "lr"}))
    registry.set_alias("fraud", "champion", 1)

    desc = registry.describe("fraud", "champion")

    assert desc["model"] == "fraud v1" and desc["aliases"] == ["champion"]
    assert desc["artifact"]["format"] == "skops"
    assert desc["training_data"]["events_topic"] == "rtscore.events"
    assert desc["training_data"]["partition_offsets"] == "0:[0,60)"
    assert desc["features"]["spec_sha256"] == "f" * 64
    assert set(desc) >= {"params", "metrics", "code_version", "libraries", "created_at"}
    text = render(desc)
    assert "model: fraud v1" in text and "  sha256: " in text


def _register_at(root: str, start_at: float, seed: int) -> int:
    time.sleep(max(0.0, start_at - time.time()))
    return Registry(Path(root)).register("fraud", _estimator(seed), _metadata(seed=seed)).version


def test_concurrent_registers_get_distinct_versions(registry: Registry) -> None:
    n = 6
    start_at = time.time() + 1.5  # after the spawned interpreters have imported everything
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(n) as pool:
        got = pool.starmap(_register_at, [(str(registry.root), start_at, i) for i in range(n)])

    assert sorted(got) == list(range(1, n + 1))
    versions = registry.versions("fraud")
    assert [v.version for v in versions] == list(range(1, n + 1))
    # Each version holds the estimator its own process registered.
    assert {v.metadata["seed"]: v.version for v in versions} == dict(enumerate(got))
    for v in versions:
        registry.load("fraud", v.version)
    assert not [p for p in (registry.root / "fraud").iterdir() if p.name.startswith(".tmp")]
