"""The model registry on a temporary directory: versions, aliases, integrity, concurrency."""

from __future__ import annotations

import json
import multiprocessing
import pickle
import re
import time
from pathlib import Path

import numpy as np
import pytest

from models.registry import Registry
from models.training import fit
from streams.errors import RegistryError


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
    assert sorted(p.name for p in mv.path.iterdir()) == ["metadata.json", "model.pkl"]
    meta = json.loads((mv.path / "metadata.json").read_text())
    assert meta == mv.metadata
    assert meta["sha256"] == mv.sha256 and re.fullmatch(r"[0-9a-f]{64}", mv.sha256)
    assert meta["params"]["model__C"] == 1.0 and meta["params"]["model__penalty"] in (
        "l2",
        "deprecated",
    )
    assert meta["metrics"]["average_precision"] == "nan"  # JSON has no NaN
    assert set(meta["libraries"]) == {"python", "numpy", "scikit-learn", "rtscore"}
    assert meta["code_version"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}", meta["code_version"])
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
    path = mv.path / "model.pkl"
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


def test_a_swapped_artifact_is_never_unpickled(registry: Registry, tmp_path: Path) -> None:
    mv = registry.register("fraud", _estimator(), _metadata())
    marker = tmp_path / "unpickled"
    (mv.path / "model.pkl").write_bytes(pickle.dumps(_Payload(marker)))

    with pytest.raises(RegistryError, match="tampered"):
        registry.load("fraud", 1)
    assert not marker.exists()
    pickle.loads((mv.path / "model.pkl").read_bytes())  # the check above was needed
    assert marker.exists()


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
