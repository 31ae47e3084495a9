"""A model's artifact on disk: skops bytes that load only the types someone declared trusted.

Loading a pickle runs whatever code the file names; loading a skops file builds objects from
an explicit list of trusted types and refuses any other. The trusted list of an artifact is
skops' own defaults (scikit-learn estimators, numpy and scipy types), plus
:data:`BUILTIN_TRUSTED`, plus the extra types its registrant declared (recorded in the
version's metadata). Names from system modules are never accepted as trusted: they are how a
file would reach code that is not a model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import skops
import skops.io as sio
from skops.io.exceptions import UntrustedTypesFoundException

from streams.errors import RegistryError

FORMAT = "skops"
FILE = "model.skops"
LEGACY_PICKLE_FILE = "model.pkl"  # what rtscore wrote before artifacts were skops files

# The tree storage of every tree model (random forests included). skops does not trust it by
# default because a hand-made file can set node indices out of range and crash predict();
# rtscore only loads artifact bytes whose sha256 equals the one recorded when they were
# written, so an edited Tree is refused before skops sees it.
BUILTIN_TRUSTED: tuple[str, ...] = ("sklearn.tree._tree.Tree",)

# Modules whose names, trusted, would let a file call into the interpreter or the system.
_FORBIDDEN_MODULES = frozenset({
    "builtins", "__builtin__", "os", "posix", "nt", "sys", "subprocess", "importlib", "runpy",
    "pickle", "marshal", "shutil", "socket", "ctypes", "code", "codeop", "pty", "io", "types",
    "functools", "operator", "signal", "multiprocessing", "threading", "asyncio", "tempfile",
    "pathlib", "webbrowser",
})  # fmt: skip
_TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


def dumps(estimator: Any, trusted: Iterable[str] = ()) -> tuple[bytes, list[str]]:
    """The estimator's skops bytes and the non-default types they hold (all declared trusted).

    A type that is neither skops-trusted, nor built in, nor in ``trusted`` is refused here,
    at registration, rather than discovered by a worker that cannot load the version.
    """
    declared = set(BUILTIN_TRUSTED) | set(check_trusted(trusted, where="trusted"))
    try:
        blob = sio.dumps(estimator)
    except Exception as exc:  # skops raises TypeError/ValueError/... for what it cannot store
        raise RegistryError(
            f"cannot store a {type(estimator).__qualname__} as a skops artifact: {exc}",
            hint="register a scikit-learn compatible estimator whose state is plain attributes "
            "(numpy arrays, numbers, strings, lists, dicts, other estimators)",
        ) from exc
    needed = sorted(set(sio.get_untrusted_types(data=blob)))
    unknown = [name for name in needed if name not in declared]
    if unknown:
        raise RegistryError(
            f"the artifact of this {type(estimator).__qualname__} holds types that are not "
            f"trusted: {', '.join(unknown)}",
            hint="if you wrote or reviewed these classes, declare them: "
            "`trusted_types = [...]` in the pipeline's [model] table (rtscore train) or "
            "Registry.register(..., trusted=[...]); a class named by [model] estimator is "
            "trusted already",
        )
    loads(blob, needed, what="the artifact just written")  # a version is loadable, or absent
    return blob, needed


def loads(blob: bytes, trusted: Iterable[str], *, what: str) -> Any:
    """Build the estimator from verified bytes, trusting only ``trusted`` beyond the defaults."""
    names = check_trusted(trusted, where=what)
    try:
        estimator = sio.loads(blob, trusted=names)
    except UntrustedTypesFoundException as exc:
        found = sio.get_untrusted_types(data=blob)
        raise RegistryError(
            f"{what} holds types that were not declared trusted when it was registered: "
            f"{', '.join(sorted(set(found) - set(names)))}; not loading it",
            hint="do not serve this file; register the model again, declaring the types "
            "you trust (`trusted_types` in [model], or Registry.register(..., trusted=...))",
        ) from exc
    except Exception as exc:
        raise RegistryError(
            f"{what} cannot be loaded: {exc}",
            hint=f"it was written by another version of skops or scikit-learn "
            f"(yours: skops {skops.__version__}); retrain with `rtscore train`",
        ) from exc
    if not callable(getattr(estimator, "predict_proba", None)):
        raise RegistryError(f"{what} holds a {type(estimator).__qualname__}, no predict_proba")
    return estimator


def check_trusted(names: Iterable[str], *, where: str) -> list[str]:
    """``names`` if each is a dotted type name outside the system modules; else RegistryError."""
    out = []
    for name in names:
        if not isinstance(name, str) or not _TYPE_NAME.fullmatch(name):
            raise RegistryError(
                f"{where}: {name!r} is not a type name",
                hint='write the full dotted name of a class, e.g. "mypackage.models.MyClassifier"',
            )
        if name.split(".")[0] in _FORBIDDEN_MODULES:
            raise RegistryError(
                f"{where}: {name} is from a system module and is never trusted",
                hint="trust only the model classes you wrote or reviewed",
            )
        out.append(name)
    return sorted(set(out))
