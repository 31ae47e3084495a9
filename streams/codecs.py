"""Schemaless Avro codecs of the records rtscore writes to its own topics (Prediction, DeadLetter).

Time logical types travel as their wire integers: a decoded ``timestamp-millis`` is an int of
epoch milliseconds, never a ``datetime``, so records compare and hash exactly everywhere.
Input events from producers are read by :mod:`streams.validation`, not here.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, cast

import fastavro
from fastavro.validation import ValidationError, validate

from streams.errors import ConfigError, InvalidEvent, RtscoreError

# Logical types whose wire value is an int/long that rtscore keeps as is (epoch units).
_TIME_LOGICAL_TYPES = frozenset(
    {
        "timestamp-millis",
        "timestamp-micros",
        "local-timestamp-millis",
        "local-timestamp-micros",
        "time-millis",
        "time-micros",
        "date",
    }
)


class RecordEncodeError(RtscoreError, ValueError):
    """A system record does not fit its schema: a bug in the code that built it (not retriable)."""


def wire_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Return ``schema`` parsed, with time logical types dropped so fastavro reads plain ints.

    The binary encoding is the same; only what fastavro's reader hands back changes: the int
    itself instead of a ``datetime``, which costs time to build and overflows (an exception,
    not a value) for instants past year 9999.
    """
    return _parse(_strip(schema))


def _strip(node: Any) -> Any:
    if isinstance(node, list):  # a union
        return [_strip(branch) for branch in node]
    if not isinstance(node, dict):
        return node
    # "__fastavro_parsed" / "__named_schemas" are fastavro's cache of the parsed schema.
    out = {key: value for key, value in node.items() if not key.startswith("__")}
    if out.get("logicalType") in _TIME_LOGICAL_TYPES:
        del out["logicalType"]
    for key in ("type", "items", "values"):
        if key in out:
            out[key] = _strip(out[key])
    if isinstance(out.get("fields"), list):
        out["fields"] = [_strip(field) for field in out["fields"]]
    return out


def _parse(schema: dict[str, Any]) -> dict[str, Any]:
    parsed = fastavro.parse_schema(schema)
    if not isinstance(parsed, dict):
        raise ConfigError(f"Avro schema {schema!r:.80} is not a record schema")
    return parsed


class RecordCodec:
    """Encode and decode one record type as schemaless Avro (the schema is known to both sides).

    ``encode`` accepts epoch-millisecond ints (canonical) or aware ``datetime`` values for
    timestamps; ``decode`` always returns ints. fastavro's writer does not check types (it
    truncates a float written to an int field); pass ``strict=True`` where that matters, e.g.
    in tests, at the cost of about doubling the encode time.
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        try:
            self.schema = _parse(schema)
            self._reader_schema = wire_schema(self.schema)
        except (ValueError, TypeError, KeyError) as exc:  # fastavro's SchemaParseException…
            raise ConfigError(f"invalid Avro schema {schema.get('name', '?')!r}: {exc}") from exc
        self.name: str = str(self.schema["name"]).rpartition(".")[2]

    @classmethod
    def from_file(cls, schemas_dir: Path, name: str) -> RecordCodec:
        """The codec of ``schemas_dir / name`` (e.g. ``"prediction.avsc"``)."""
        path = schemas_dir / name
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(
                f"schema {path} does not exist",
                hint="set RTSCORE_SCHEMAS_DIR to the schemas/ folder",
            ) from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"schema {path} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"schema {path} is not an Avro record schema (a JSON object)")
        return cls(raw)

    def encode(self, record: dict[str, Any], *, strict: bool = False) -> bytes:
        """Return the Avro binary of ``record``; RecordEncodeError if it does not fit the schema."""
        if strict:
            self._check(record)
        out = io.BytesIO()
        try:
            fastavro.schemaless_writer(out, self.schema, record)
        except (ValueError, TypeError, OverflowError, AttributeError, KeyError) as exc:
            self._check(record)  # names the offending field when it can
            raise RecordEncodeError(f"cannot encode {self.name} record: {exc}") from exc
        return out.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """Return the record in ``data``; InvalidEvent("undecodable", stage="decode") if corrupt."""
        buf = io.BytesIO(data)
        try:
            record = fastavro.schemaless_reader(buf, self._reader_schema, None)
        except Exception as exc:  # fastavro's failures on corrupt bytes are not one documented set
            detail = str(exc) or "the data ends too early"
            raise InvalidEvent(
                "undecodable",
                f"{len(data)} bytes are not a {self.name} record in Avro binary: {detail}. "
                "It was written with another schema or is corrupt.",
                stage="decode",
            ) from exc
        if buf.tell() != len(data):
            raise InvalidEvent(
                "undecodable",
                f"{len(data) - buf.tell()} bytes are left over after a complete {self.name} "
                f"record of {buf.tell()} bytes: it was written with another schema.",
                stage="decode",
            )
        return cast(dict[str, Any], record)  # a record schema always reads as a dict

    def _check(self, record: dict[str, Any]) -> None:
        try:
            validate(record, self.schema, raise_errors=True)
        except ValidationError as exc:
            problems = "; ".join(str(error) for error in exc.errors) or str(exc)
            raise RecordEncodeError(
                f"{self.name} record does not fit its schema: {problems}"
            ) from exc
