"""Decode and check input events (JSON or schemaless Avro) against the pipeline's record schema.

:class:`EventDecoder` turns the bytes of one Kafka record into a dict holding exactly the
schema's fields, normalised, or raises :class:`~streams.errors.InvalidEvent` with a stable
``reason`` and a message for the producer.

Wire format: a ``content-type`` header decides (``application/json``; ``application/avro`` or
``avro/binary``); without one, a record whose first non-whitespace byte is ``{`` is JSON and
anything else is Avro. An Avro record that happens to start with ``{`` (or whitespace then
``{``) is misread as JSON, so Avro producers should send the header.

JSON: one UTF-8 object; keys that are not schema fields are ignored (producers may add fields
before the schema does); a field may be absent only if the schema gives it a default; ``null``
is accepted only for ``["null", T]`` fields. Avro: the whole payload must be one record of the
pipeline's schema, with no bytes left over. Both formats go through the same field checks, so
an event normalises to the same dict whichever way it was sent.

Field types and what they become: ``int``/``long`` -> int within int32/int64 (bools and floats,
even integral ones such as ``3.0``, are refused: Avro's own JSON encoding refuses them and a
float id above 2**53 has already lost digits); ``float``/``double`` -> finite float (JSON ints
accepted; NaN and infinities refused, from Avro too); ``boolean``; ``string`` (valid Unicode);
``timestamp-millis`` -> int epoch ms from 1970 through 2200 (JSON: an int, or an ISO-8601
string with a timezone, floored to the millisecond); ``["null", T]`` -> None or T. Other
types are refused when the decoder is built (ConfigError).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro

from streams.codecs import wire_schema
from streams.errors import ConfigError, InvalidEvent
from streams.pipeline import RecordSpec

JSON = "json"
AVRO = "avro"
_CONTENT_TYPES = {
    "application/json": JSON,
    "text/json": JSON,
    "application/avro": AVRO,
    "avro/binary": AVRO,
    "application/x-avro-binary": AVRO,
    "application/vnd.apache.avro+binary": AVRO,
}
_JSON_WHITESPACE = b" \t\r\n"
_KEPT = "the record is kept whole in the dead-letter topic."
_ABSENT = object()

Headers = Sequence[tuple[str, bytes]] | Mapping[str, bytes]


class EventDecoder:
    """Decode one record type; build once per pipeline, then call :meth:`decode` per record."""

    def __init__(self, spec: RecordSpec, *, max_bytes: int) -> None:
        self.spec = spec
        self.max_bytes = max_bytes
        self.record_name = str(spec.schema["name"]).rpartition(".")[2]
        fields: list[tuple[str, Checker, Any]] = []
        for field in spec.schema["fields"]:
            name = field["name"]
            try:
                check = _checker_for(field["type"])
            except ValueError as exc:
                raise ConfigError(f"{self.record_name}.{name}: {exc}") from exc
            default = _ABSENT
            if "default" in field:
                try:
                    default = check(field["default"])
                except _Reject as exc:
                    raise ConfigError(
                        f"{self.record_name}.{name}: default {_show(field['default'])} is not "
                        f"{exc.expected}"
                    ) from exc
            fields.append((name, check, default))
        self._fields = tuple(fields)
        self._avro_schema = wire_schema(spec.schema)

    def decode(self, value: bytes | None, headers: Headers | None = None) -> dict[str, Any]:
        """Return the event as ``{field: value}`` in schema order, or raise InvalidEvent."""
        if value is None:
            raise self._empty("has no value (None)")
        if len(value) > self.max_bytes:
            raise InvalidEvent(
                "too_large",
                f"{self.record_name} record is {len(value)} bytes, over the limit of "
                f"{self.max_bytes} (RTSCORE_MAX_EVENT_BYTES). Send smaller records or raise "
                f"the limit; {_KEPT}",
                stage="decode",
            )
        if not value:
            raise self._empty("is empty (0 bytes)")
        fmt = _declared_format(headers) if headers else None
        if fmt is None:
            first = (
                value[:1]
                if value[0] not in _JSON_WHITESPACE
                else value.lstrip(_JSON_WHITESPACE)[:1]
            )
            fmt = JSON if first == b"{" else AVRO
            declared = False
        else:
            declared = True
        obj = self._parse_json(value) if fmt is JSON else self._parse_avro(value, declared)
        return self._validate(obj)

    def _validate(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        name = ""
        try:
            for name, check, default in self._fields:
                value = obj.get(name, _ABSENT)
                if value is not _ABSENT:
                    out[name] = check(value)
                elif default is not _ABSENT:
                    out[name] = default
                else:
                    raise _Reject("missing_field", "present", "no such field", "Add it")
        except _Reject as exc:
            raise self._invalid(exc, name, obj) from None
        return out

    def _invalid(self, exc: _Reject, name: str, obj: Mapping[str, Any]) -> InvalidEvent:
        where = self.record_name
        event_id = obj.get(self.spec.id_field)
        if (
            name != self.spec.id_field
            and isinstance(event_id, int | str)
            and len(str(event_id)) < 40
        ):
            where = f"{where} with {self.spec.id_field}={event_id!r}"
        if exc.reason == "missing_field":
            return InvalidEvent(
                exc.reason,
                f"{where} lacks the field {name!r}, which has no default in the schema. "
                f"Send it in every record; {_KEPT}",
            )
        return InvalidEvent(
            exc.reason, f"{where}: {name} must be {exc.expected}; got {exc.got}. {exc.fix}; {_KEPT}"
        )

    def _parse_json(self, value: bytes) -> Mapping[str, Any]:
        try:
            obj = json.loads(value.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError…
            raise self._undecodable(
                f"is not valid UTF-8 JSON ({_brief(exc)}). Fix the producer's serializer; if it "
                "writes Avro binary, set the header content-type: application/avro"
            ) from None
        if not isinstance(obj, dict):
            raise InvalidEvent(
                "not_an_object",
                f"{self.record_name} record is JSON but not an object: got "
                f"{_show(obj)}. Send one JSON object per record; {_KEPT}",
            )
        return obj

    def _parse_avro(self, value: bytes, declared: bool) -> Mapping[str, Any]:
        what = (
            f"is not Avro binary of the {self.record_name} schema"
            if declared
            else f"is neither a JSON object (it does not start with '{{') nor Avro binary of "
            f"the {self.record_name} schema"
        )
        buf = io.BytesIO(value)
        try:
            obj = fastavro.schemaless_reader(buf, self._avro_schema, None)
        except Exception as exc:  # fastavro's failures on arbitrary bytes are not one set
            raise self._undecodable(f"{what} ({_brief(exc)}). Fix the producer") from None
        left = len(value) - buf.tell()
        if left:
            raise self._undecodable(
                f"{what}: {left} bytes are left over after a complete record (written with "
                "another schema, or several records in one message?). Fix the producer"
            )
        assert isinstance(obj, dict)  # a record schema always reads as a dict
        return obj

    def _undecodable(self, problem: str) -> InvalidEvent:
        return InvalidEvent(
            "undecodable", f"{self.record_name} record {problem}; {_KEPT}", stage="decode"
        )

    def _empty(self, problem: str) -> InvalidEvent:
        return InvalidEvent(
            "empty",
            f"{self.record_name} record {problem}: a tombstone or an empty message. Send "
            f"one JSON or Avro {self.record_name} per record; {_KEPT}",
            stage="decode",
        )


def _declared_format(headers: Headers) -> str | None:
    items = headers.items() if isinstance(headers, Mapping) else headers
    for key, raw in items:
        name = key.decode("latin-1") if isinstance(key, bytes) else str(key)
        if name.lower() != "content-type":
            continue
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        media = text.split(";", 1)[0].strip().lower()
        fmt = _CONTENT_TYPES.get(media)
        if fmt is None:
            fmt = JSON if media.endswith("+json") else None
        if fmt is None:
            raise InvalidEvent(
                "undecodable",
                f"content-type {text[:60]!r} is not a format rtscore reads. Use "
                "application/json or application/avro, or leave the header out to let "
                f"rtscore detect the format; {_KEPT}",
                stage="decode",
            )
        return fmt
    return None


def _brief(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "the data ends too early"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, IndexError):  # fastavro, on a union branch the schema does not have
        return "a union branch index out of range"
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:119] + "…"


# Field checkers: built once per schema field in __init__, called once per field per event.
Checker = Callable[[Any], Any]
_MS = timedelta(milliseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TIME_MIN_MS = 0  # 1970-01-01T00:00:00Z
TIME_MAX_MS = (datetime(2201, 1, 1, tzinfo=UTC) - _EPOCH) // _MS - 1  # 2200-12-31T23:59:59.999Z
_FLOAT32_MAX = 3.4028234663852886e38


class _Reject(Exception):
    """One field value is invalid; the decoder adds the field and the record and re-raises."""

    def __init__(self, reason: str, expected: str, got: str, fix: str = "Fix the producer") -> None:
        super().__init__(reason)
        self.reason, self.expected, self.got, self.fix = reason, expected, got, fix


def _checker_for(avro_type: Any) -> Checker:
    """The checker of one field's Avro type; ValueError names a type rtscore cannot read."""
    if isinstance(avro_type, list):
        branches = [b for b in avro_type if b != "null"]
        if len(avro_type) != 2 or len(branches) != 1:
            raise ValueError(f"union {avro_type} is not supported; use ['null', T]")
        return _nullable(_checker_for(branches[0]))
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if logical == "timestamp-millis" and avro_type.get("type") == "long":
            return _timestamp_millis
        if logical is not None:
            raise ValueError(f"logical type {logical!r} is not supported; use timestamp-millis")
        return _checker_for(avro_type.get("type"))
    checker = _PRIMITIVES.get(avro_type) if isinstance(avro_type, str) else None
    if checker is None:
        raise ValueError(
            f"type {avro_type!r} is not supported in input events; use boolean, int, long, "
            "float, double, string, timestamp-millis or ['null', one of those]"
        )
    return checker


def _nullable(check: Checker) -> Checker:
    def nullable(value: Any) -> Any:
        return None if value is None else check(value)

    return nullable


def _integer(bits: int) -> Checker:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    expected = f"an integer (Avro {'int' if bits == 32 else 'long'})"

    def integer(value: Any) -> int:
        if type(value) is int:  # not bool, which is an int subclass
            if low <= value <= high:
                return value
            raise _Reject("out_of_range", f"{expected} from {low} to {high}", _show(value))
        raise _wrong_type(expected, value)

    return integer


def _real(bits: int) -> Checker:
    expected = f"a finite number (Avro {'float' if bits == 32 else 'double'})"
    limit = _FLOAT32_MAX if bits == 32 else math.inf

    def real(value: Any) -> float:
        kind = type(value)
        if kind is int:
            try:
                value = float(value)
            except OverflowError:
                raise _Reject("out_of_range", expected, _show(value)) from None
        elif kind is not float:
            raise _wrong_type(expected, value)
        if not math.isfinite(value):
            raise _Reject("not_finite", expected, _show(value))
        if abs(value) > limit:
            raise _Reject("out_of_range", f"{expected} within ±{limit:.7g}", _show(value))
        return value

    return real


def _boolean(value: Any) -> bool:
    if value is True or value is False:
        return value
    raise _wrong_type("true or false", value)


def _string(value: Any) -> str:
    if type(value) is str:
        if value.isascii():
            return value
        try:
            value.encode("utf-8")  # a JSON "\ud800" escape decodes to an unencodable str
            return value
        except UnicodeEncodeError:
            raise _Reject("wrong_type", "valid Unicode text", "a lone surrogate escape") from None
    raise _wrong_type("a string", value)


def _timestamp_millis(value: Any) -> int:
    expected = "a time from 1970 through 2200, as epoch milliseconds or ISO-8601 with a timezone"
    if type(value) is int:
        millis = value
    elif type(value) is str:
        try:
            instant = datetime.fromisoformat(value)
        except ValueError:
            raise _Reject(
                "wrong_type", expected, _show(value), "Send e.g. 2018-04-01T12:00:00Z"
            ) from None
        if instant.tzinfo is None or instant.utcoffset() is None:
            raise _Reject("wrong_type", expected, _show(value), "Add a timezone, e.g. Z for UTC")
        millis = (instant - _EPOCH) // _MS  # exact: timedelta arithmetic, no float
    else:
        raise _wrong_type(expected, value)
    if TIME_MIN_MS <= millis <= TIME_MAX_MS:
        return millis
    fix = "Fix the producer"
    if any(TIME_MIN_MS <= millis // scale <= TIME_MAX_MS for scale in (1000, 1_000_000)):
        fix = "It looks like microseconds or nanoseconds: send milliseconds"
    raise _Reject("out_of_range", expected, _show(value), fix)


_PRIMITIVES: dict[str, Checker] = {
    "int": _integer(32),
    "long": _integer(64),
    "float": _real(32),
    "double": _real(64),
    "boolean": _boolean,
    "string": _string,
}


def _wrong_type(expected: str, value: Any) -> _Reject:
    if value is None:
        fix = "The field is not nullable: send a value"
    elif isinstance(value, bool):
        fix = "Send a value of the expected type, not true/false"
    elif isinstance(value, float) and "integer" in expected:
        fix = "Send a JSON integer, without a decimal point or exponent"
    elif isinstance(value, str):
        fix = "Send a JSON value of that type, not a quoted string"
    else:
        fix = "Fix the producer"
    return _Reject("wrong_type", expected, _show(value), fix)


def _show(value: Any) -> str:
    """A short, safe rendering of a received value for an error message."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if value is None:
        return "null"
    text = repr(value)
    return f"{text[:60]}… ({type(value).__name__}, {len(text)} chars)" if len(text) > 64 else text
