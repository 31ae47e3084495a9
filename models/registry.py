"""The model registry: immutable, numbered versions of a model on disk, and aliases to them.

Layout: ``<root>/<name>/<version>/`` holds ``model.skops`` (the estimator), ``metadata.json``
(what invariant 6 asks: artifact sha256, training data, parameters, metrics, feature-spec
hash, code and library versions) and, when given, ``profile.json`` (the reference profile
drift is measured against); ``<root>/<name>/aliases.json`` holds the aliases and their
history.

Loading never runs code from the artifact: :meth:`Registry.load` hashes the bytes, and only
bytes whose sha256 equals the recorded one are handed to skops, which builds only the types
declared trusted at registration (:mod:`models.artifact`). The hash stops a swapped or
corrupted file; the trusted list stops a file that would build anything else. Someone who can
rewrite metadata.json can change both: protect the registry directory like code.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sklearn

from models import artifact
from streams.errors import RegistryError

log = logging.getLogger(__name__)

MODEL_FILE = artifact.FILE
METADATA_FILE = "metadata.json"
PROFILE_FILE = "profile.json"
ALIASES_FILE = "aliases.json"
# Set by the caller at registration; invariant 6 needs each of them.
REQUIRED_METADATA = ("feature_names", "feature_spec_hash", "metrics", "training_data")
# Set by the registry itself; a caller may not supply them.
REGISTRY_METADATA = (
    "name", "version", "sha256", "created_at", "params", "code_version", "code_dirty",
    "libraries", "artifact", "profile_sha256",
)  # fmt: skip
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    path: Path  # the version's directory
    sha256: str  # of the artifact (model.skops)
    metadata: dict[str, Any]


@dataclass(frozen=True)
class LoadedModel:
    version: ModelVersion
    estimator: Any  # has predict_proba


class Registry:
    """Models under one root directory; safe for several processes at once."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- writing ---------------------------------------------------------------------------

    def register(
        self,
        name: str,
        estimator: Any,
        metadata: dict[str, Any],
        *,
        profile: dict[str, Any] | None = None,
        trusted: Sequence[str] = (),
    ) -> ModelVersion:
        """Store ``estimator`` as the next version of ``name`` and return that version.

        ``trusted`` names the types beyond skops' defaults (scikit-learn, numpy, scipy) that
        the artifact may hold, e.g. your own estimator class; an artifact holding any other
        type is refused here. ``profile`` (JSON-safe) is stored beside it as the version's
        reference profile for drift, its sha256 in the metadata.

        The files are written to a temporary directory and renamed into place, so a version
        is either absent or complete. The version number is claimed with ``os.mkdir`` (which
        fails if the directory exists), so concurrent registrations get distinct numbers and
        never overwrite each other.
        """
        _check_name("model", name)
        missing = [key for key in REQUIRED_METADATA if key not in metadata]
        if missing:
            raise RegistryError(
                f"cannot register {name}: metadata lacks {', '.join(missing)}",
                hint="pass the training set's feature names, feature-spec hash, metrics and "
                "training-data description",
            )
        clash = [key for key in REGISTRY_METADATA if key in metadata]
        if clash:
            raise RegistryError(
                f"cannot register {name}: metadata sets {', '.join(clash)}",
                hint="the registry fills these in itself; leave them out",
            )
        model_dir = self.root / name
        model_dir.mkdir(parents=True, exist_ok=True)
        tmp = model_dir / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            blob, trusted_types = artifact.dumps(estimator, trusted)
            digest = hashlib.sha256(blob).hexdigest()
            _write_file(tmp / MODEL_FILE, blob)
            extra: dict[str, Any] = {}
            if profile is not None:
                profile_bytes = _dump_json(_json_safe(profile))
                _write_file(tmp / PROFILE_FILE, profile_bytes)
                extra["profile_sha256"] = hashlib.sha256(profile_bytes).hexdigest()
            version = self._claim_version(model_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        code, dirty = _code_version()
        try:
            record = {
                "name": name,
                "version": version,
                "sha256": digest,
                "created_at": datetime.now(UTC).isoformat(),
                "params": _json_safe(_params(estimator)),
                "code_version": code,
                "code_dirty": dirty,
                "libraries": _library_versions(),
                "artifact": {
                    "file": MODEL_FILE,
                    "format": artifact.FORMAT,
                    "trusted_types": trusted_types,
                    "bytes": len(blob),
                },
                **extra,
                **_json_safe(metadata),
            }
            _write_file(tmp / METADATA_FILE, _dump_json(record))
            # Replaces the empty claim directory atomically; fails if it is not empty.
            os.rename(tmp, model_dir / str(version))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            with contextlib.suppress(OSError):  # give the claimed number back if still empty
                os.rmdir(model_dir / str(version))
            raise
        _fsync_dir(model_dir)
        log.info("registered %s version %d (sha256 %s)", name, version, digest[:12])
        return self.get(name, version)

    def _claim_version(self, model_dir: Path) -> int:
        version = max(_version_dirs(model_dir), default=0) + 1
        while True:
            try:
                os.mkdir(model_dir / str(version))
                return version
            except FileExistsError:
                version += 1

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` of ``name`` at an existing ``version``; recorded in the history."""
        _check_name("alias", alias)
        if alias == "latest" or alias.isdigit():
            raise RegistryError(
                f"{alias!r} cannot be an alias", hint="'latest' and numbers already name versions"
            )
        self.get(name, version)
        with self._aliases_locked(name) as state:
            state["aliases"][alias] = version
            state["history"].append(_history_entry(alias, version, "set"))
        log.info("alias %s of %s -> version %d", alias, name, version)

    def rollback(self, name: str, alias: str = "champion") -> ModelVersion:
        """Point ``alias`` back at the version that held it before the current one.

        Repeated rollbacks walk further back; a version rolled away from is not returned to
        unless it is set again.
        """
        with self._aliases_locked(name) as state:
            held = _alias_stack(state["history"], alias)
            if len(held) < 2:
                raise RegistryError(
                    f"alias {alias} of {name} has no earlier version to roll back to",
                    hint=f"set it explicitly: `rtscore model promote {name} <version>`",
                )
            previous = held[-2]
            state["aliases"][alias] = previous
            state["history"].append(_history_entry(alias, previous, "rollback"))
        log.info("alias %s of %s rolled back to version %d", alias, name, previous)
        return self.get(name, previous)

    @contextlib.contextmanager
    def _aliases_locked(self, name: str) -> Iterator[dict[str, Any]]:
        """Yield the aliases state under an exclusive lock; write it back atomically."""
        model_dir = self._model_dir(name)
        with open(model_dir / ".aliases.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._read_aliases(name)
            yield state
            tmp = model_dir / f".{ALIASES_FILE}.{uuid.uuid4().hex}"
            _write_file(tmp, _dump_json(state))
            os.replace(tmp, model_dir / ALIASES_FILE)
            _fsync_dir(model_dir)

    # -- reading ---------------------------------------------------------------------------

    def models(self) -> list[str]:
        """Names of the models that have at least one complete version."""
        if not self.root.is_dir():
            return []
        return sorted(
            d.name
            for d in self.root.iterdir()
            if d.is_dir() and _NAME.fullmatch(d.name) and self._complete_versions(d)
        )

    def versions(self, name: str) -> list[ModelVersion]:
        """Every complete version of ``name``, oldest first."""
        model_dir = self._model_dir(name)
        return [self.get(name, v) for v in self._complete_versions(model_dir)]

    def get(self, name: str, version: int) -> ModelVersion:
        model_dir = self._model_dir(name)
        path = model_dir / str(version)
        try:
            meta = json.loads((path / METADATA_FILE).read_text())
        except FileNotFoundError as exc:
            known = ", ".join(map(str, self._complete_versions(model_dir))) or "none"
            raise RegistryError(
                f"model {name} has no version {version} (versions: {known})",
                hint=f"list them with `rtscore model list {name}`",
            ) from exc
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{path / METADATA_FILE} is not valid JSON: {exc}") from exc
        if meta.get("name") != name or meta.get("version") != version:
            raise RegistryError(
                f"{path / METADATA_FILE} describes {meta.get('name')} version "
                f"{meta.get('version')}, not {name} version {version}",
                hint="the registry directory was edited by hand; restore it from a backup",
            )
        return ModelVersion(name, version, path, meta["sha256"], meta)

    def aliases(self, name: str) -> dict[str, int]:
        """Current aliases of ``name`` (alias -> version)."""
        return dict(self._read_aliases(name)["aliases"])

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every alias change of ``name``, oldest first: alias, version, time, action."""
        return list(self._read_aliases(name)["history"])

    def resolve(self, name: str, ref: str | int) -> ModelVersion:
        """A version from a number (3 or "3"), "latest" or an alias ("champion")."""
        if isinstance(ref, int) or ref.isdigit():
            return self.get(name, int(ref))
        if ref == "latest":
            complete = self._complete_versions(self._model_dir(name))
            if not complete:
                raise RegistryError(
                    f"model {name} has no complete version in {self.root}",
                    hint="train one with `rtscore train`",
                )
            return self.get(name, complete[-1])
        version = self._read_aliases(name)["aliases"].get(ref)
        if version is None:
            raise RegistryError(
                f"alias {ref} not set for {name}",
                hint=f"`rtscore model promote {name} <version>`"
                if ref == "champion"
                else f"set it with Registry.set_alias({name!r}, {ref!r}, <version>)",
            )
        return self.get(name, version)

    def load(self, name: str, ref: str | int = "champion") -> LoadedModel:
        """A version's estimator, built from its artifact after checking the file's sha256."""
        mv = self.resolve(name, ref)
        blob = self._verified(mv, MODEL_FILE, mv.sha256)
        trusted = mv.metadata.get("artifact", {}).get("trusted_types", [])
        what = f"{name} version {mv.version} ({mv.path / MODEL_FILE})"
        return LoadedModel(mv, artifact.loads(blob, trusted, what=what))

    def profile(self, name: str, ref: str | int = "champion") -> dict[str, Any] | None:
        """A version's reference profile (None when it was registered without one)."""
        mv = self.resolve(name, ref)
        digest = mv.metadata.get("profile_sha256")
        if digest is None:
            return None
        profile: dict[str, Any] = json.loads(self._verified(mv, PROFILE_FILE, digest))
        return profile

    def describe(self, name: str, ref: str | int = "champion") -> dict[str, Any]:
        """A version's lineage in readable form (see :func:`models.lineage.describe`)."""
        from models.lineage import describe

        mv = self.resolve(name, ref)
        aliases = [a for a, v in self.aliases(name).items() if v == mv.version]
        return describe(mv.metadata, sorted(aliases))

    def _verified(self, mv: ModelVersion, file: str, sha256: str) -> bytes:
        """The bytes of one of a version's files, refused unless their sha256 is ``sha256``."""
        path = mv.path / file
        try:
            blob = path.read_bytes()
        except FileNotFoundError as exc:
            if file == MODEL_FILE and (mv.path / artifact.LEGACY_PICKLE_FILE).exists():
                raise RegistryError(
                    f"{mv.name} version {mv.version} is a pickle written by an earlier "
                    "rtscore; loading a pickle can run any code, so it is not loaded",
                    hint="train it again with `rtscore train` (or register your estimator "
                    "again with Registry.register) and promote the new version",
                ) from exc
            raise RegistryError(
                f"{mv.name} version {mv.version}: {path} is missing",
                hint="the version is damaged; register a new one and promote it",
            ) from exc
        digest = hashlib.sha256(blob).hexdigest()
        if digest != sha256:
            raise RegistryError(
                f"{mv.name} version {mv.version}: {file} has been tampered with or corrupted "
                f"(sha256 {digest[:12]}…, registered {sha256[:12]}…); not loading it",
                hint="do not use this file; restore it from a backup or promote another version",
            )
        return blob

    # -- internals -------------------------------------------------------------------------

    def _model_dir(self, name: str) -> Path:
        _check_name("model", name)
        model_dir = self.root / name
        if not model_dir.is_dir():
            raise RegistryError(
                f"no model named {name} in {self.root}", hint="train one with `rtscore train`"
            )
        return model_dir

    @staticmethod
    def _complete_versions(model_dir: Path) -> list[int]:
        # A claimed directory without metadata.json is a registration in flight (or one
        # that crashed); it is never a version.
        return [
            v for v in _version_dirs(model_dir) if (model_dir / str(v) / METADATA_FILE).is_file()
        ]

    def _read_aliases(self, name: str) -> dict[str, Any]:
        path = self._model_dir(name) / ALIASES_FILE
        try:
            state: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return {"aliases": {}, "history": []}
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{path} is not valid JSON: {exc}") from exc
        return state


def _alias_stack(history: list[dict[str, Any]], alias: str) -> list[int]:
    """Versions that held ``alias`` in turn; a rollback pops the current one."""
    stack: list[int] = []
    for entry in history:
        if entry["alias"] != alias:
            continue
        if entry["action"] == "rollback":
            stack.pop()
        elif not stack or stack[-1] != entry["version"]:
            stack.append(entry["version"])
    return stack


def _history_entry(alias: str, version: int, action: str) -> dict[str, Any]:
    return {
        "alias": alias,
        "version": version,
        "time": datetime.now(UTC).isoformat(),
        "action": action,
    }


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RegistryError(
            f"invalid {kind} name {name!r}",
            hint="use letters, digits, '.', '_' and '-', starting with a letter or digit",
        )


def _version_dirs(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(d.name) for d in model_dir.iterdir() if d.name.isdigit() and d.is_dir())


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dump_json(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False).encode() + b"\n"


def _params(estimator: Any) -> dict[str, Any]:
    get_params = getattr(estimator, "get_params", None)
    return dict(get_params()) if callable(get_params) else {}


def _json_safe(value: Any) -> Any:
    """Plain JSON types; numpy scalars/arrays unwrapped, anything else by its repr."""
    if isinstance(value, np.generic | np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # "nan", "inf": JSON has no such numbers
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _code_version() -> tuple[str, bool | None]:
    """The git commit of the rtscore checkout and whether tracked files differ from it;
    ("unknown", None) when installed without git (a wheel)."""
    git = ["git", "-C", str(_REPO_ROOT)]
    try:
        top = subprocess.run(
            [*git, "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.split()  # fmt: skip
        # Only this package's own repository counts, not one it happens to be installed in.
        if len(top) != 2 or Path(top[0]).resolve() != _REPO_ROOT:
            return "unknown", None
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no", "--", "streams", "models"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
    return top[1], bool(changed)


def _library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "scipy": _version_of("scipy"),
        "skops": _version_of("skops"),
        "rtscore": _version_of("rtscore"),
    }


def _version_of(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
