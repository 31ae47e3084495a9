"""A model version's lineage (invariant 6) in the form a person reads: which data, features,
parameters, code and libraries made it, and how it scored. ``rtscore model show`` prints it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def describe(meta: dict[str, Any], aliases: list[str]) -> dict[str, Any]:
    """Sections of a version's metadata, times as UTC ISO strings, nothing left out that
    invariant 6 names (absent fields read "unknown")."""
    data = meta.get("training_data", {})
    test = meta.get("test_data", {})
    art = meta.get("artifact", {})
    return {
        "model": f"{meta.get('name')} v{meta.get('version')}",
        "aliases": aliases,
        "created_at": meta.get("created_at", "unknown"),
        "artifact": {
            "file": art.get("file", "unknown"),
            "format": art.get("format", "pickle (not loadable: retrain)"),
            "sha256": meta.get("sha256", "unknown"),
            "trusted_types": art.get("trusted_types", []),
        },
        "estimator": meta.get("estimator", "unknown"),
        "params": _own_params(meta.get("params", {})),
        "metrics": meta.get("metrics", {}),
        "training_data": {
            "events_topic": data.get("topic", "unknown"),
            "outcomes_topic": data.get("outcomes_topic", "unknown"),
            "range": _range(data.get("start_ms"), data.get("end_ms")),
            "read": _range(data.get("read_from_ms"), data.get("read_to_ms")),
            "partition_offsets": _offsets(data.get("partition_offsets")),
            "outcomes_partition_offsets": _offsets(data.get("outcomes_partition_offsets")),
            "rows": data.get("rows", "unknown"),
            "positives": data.get("positives", "unknown"),
            "label_rate": data.get("label_rate", "unknown"),
            "labels": data.get("labels", "unknown"),
            "sha256": data.get("sha256", "unknown"),
        },
        "test_data": {
            "range": _range(test.get("start_ms"), test.get("end_ms")),
            "rows": test.get("rows", "unknown"),
            "label_rate": test.get("label_rate", "unknown"),
            "excluded": test.get("excluded", "unknown"),
        },
        "features": {
            "names": meta.get("feature_names", []),
            "spec_sha256": meta.get("feature_spec_hash", "unknown"),
        },
        "code_version": meta.get("code_version", "unknown"),
        "code_dirty": meta.get("code_dirty", "unknown"),
        "libraries": meta.get("libraries", {}),
        "profile_sha256": meta.get("profile_sha256"),
    }


def render(desc: dict[str, Any]) -> str:
    """The description as indented ``key: value`` lines."""
    lines: list[str] = []
    _render(desc, 0, lines)
    return "\n".join(lines)


def _render(value: dict[str, Any], depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    for key, item in value.items():
        if isinstance(item, dict) and item:
            lines.append(f"{pad}{key}:")
            _render(item, depth + 1, lines)
        else:
            lines.append(f"{pad}{key}: {_short(item)}")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(map(str, value)) if value else "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_short(v)}" for k, v in value.items()) if value else "-"
    return str(value)


def _own_params(params: dict[str, Any]) -> dict[str, Any]:
    """The final estimator's parameters when it sits in a Pipeline after a "model" step."""
    own = {k.removeprefix("model__"): v for k, v in params.items() if k.startswith("model__")}
    return own or params


def _offsets(offsets: Any) -> str:
    """{"0": [first, end], ...} as "0:[first,end) 1:[...)"."""
    if not isinstance(offsets, dict):
        return "unknown"
    return " ".join(f"{p}:[{r[0]},{r[1]})" for p, r in sorted(offsets.items(), key=_by_int))


def _by_int(item: tuple[str, Any]) -> tuple[int, str]:
    return (int(item[0]), item[0]) if item[0].isdigit() else (-1, item[0])


def _range(start_ms: Any, end_ms: Any) -> str:
    if not isinstance(start_ms, int) or not isinstance(end_ms, int):
        return "unknown"
    return f"[{_iso(start_ms)}, {_iso(end_ms)})"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
