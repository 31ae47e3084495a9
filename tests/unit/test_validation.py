"""EventDecoder: JSON and Avro input events become normalised dicts or InvalidEvent only."""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.errors import ConfigError, InvalidEvent
from streams.pipeline import RecordSpec, load_pipeline
from streams.settings import Settings
from streams.validation import TIME_MAX_MS, TIME_MIN_MS, EventDecoder

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_BYTES = 65536
AVRO_HEADER = [("content-type", b"application/avro")]
JSON_HEADER = [("content-type", b"application/json")]
# 2018-04-01T12:00:00Z
TX_MS = 1_522_584_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def transaction_spec() -> RecordSpec:
    settings = Settings()
    return load_pipeline(settings.pipeline, settings.schemas_dir).events


SPEC = transaction_spec()
DECODER = EventDecoder(SPEC, max_bytes=MAX_BYTES)
GOOD = {
    "transaction_id": 42,
    "tx_datetime": TX_MS,
    "customer_id": 7,
    "terminal_id": 1234,
    "tx_amount": 57.16,
}

# A second schema with every supported type, to show nothing in the decoder is demo-specific.
OTHER_SCHEMA = fastavro.parse_schema(
    {
        "type": "record",
        "name": "Click",
        "namespace": "example",
        "fields": [
            {"name": "click_id", "type": "string"},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "user", "type": "int"},
            {"name": "weight", "type": "float"},
            {"name": "is_bot", "type": "boolean"},
            {"name": "referrer", "type": ["null", "string"], "default": None},
            {"name": "score", "type": "double", "default": 1},
            {"name": "seen", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
        ],
    }
)
OTHER = EventDecoder(
    RecordSpec(OTHER_SCHEMA, id_field="click_id", time_field="at", key_field="user"),
    max_bytes=MAX_BYTES,
)
CLICK = {"click_id": "c-1", "at": TX_MS, "user": 3, "weight": 0.5, "is_bot": False, "seen": None}


def as_json(record: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps({**record, **changes}).encode()


def as_avro(record: dict[str, Any], schema: dict[str, Any] = SPEC.schema) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


def without(record: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != name}


def assert_conforms(event: dict[str, Any], spec: RecordSpec) -> None:
    """Exactly the schema's fields, in order, each of its normalised Python type."""
    assert list(event) == list(spec.fields)
    for name, avro_type in spec.fields.items():
        value = event[name]
        if isinstance(avro_type, list):
            if value is None:
                continue
            avro_type = next(t for t in avro_type if t != "null")
        if isinstance(avro_type, dict):
            assert type(value) is int and TIME_MIN_MS <= value <= TIME_MAX_MS, name
        elif avro_type in ("long", "int"):
            bits = 64 if avro_type == "long" else 32
            assert type(value) is int and -(2 ** (bits - 1)) <= value < 2 ** (bits - 1), name
        elif avro_type in ("double", "float"):
            assert type(value) is float and math.isfinite(value), name
        elif avro_type == "boolean":
            assert type(value) is bool, name
        else:
            assert type(value) is str, name
            value.encode("utf-8")


# --- valid events -------------------------------------------------------------------------


def test_json_and_avro_decode_to_the_same_dict() -> None:
    assert DECODER.decode(as_json(GOOD)) == GOOD
    assert DECODER.decode(as_avro(GOOD)) == GOOD
    assert DECODER.decode(as_avro(GOOD), AVRO_HEADER) == GOOD
    assert_conforms(DECODER.decode(as_json(GOOD)), SPEC)


def test_ints_for_double_fields_become_floats() -> None:
    event = DECODER.decode(as_json(GOOD, tx_amount=12))
    assert event["tx_amount"] == 12.0 and type(event["tx_amount"]) is float


@pytest.mark.parametrize(
    ("text", "millis"),
    [
        ("2018-04-01T12:00:00Z", TX_MS),
        ("2018-04-01T14:00:00+02:00", TX_MS),
        ("2018-04-01T12:00:00.123Z", TX_MS + 123),
        ("2018-04-01T12:00:00.123999+00:00", TX_MS + 123),  # floored, never rounded up
        ("1970-01-01T00:00:00Z", 0),
        ("2200-12-31T23:59:59.999Z", TIME_MAX_MS),
    ],
)
def test_iso_timestamps_become_exact_epoch_millis(text: str, millis: int) -> None:
    assert DECODER.decode(as_json(GOOD, tx_datetime=text))["tx_datetime"] == millis


def test_unknown_json_fields_are_ignored_and_field_order_is_the_schemas() -> None:
    payload = json.dumps({"extra": [1], **dict(reversed(list(GOOD.items())))}).encode()
    assert list(DECODER.decode(payload)) == list(GOOD)


def test_defaults_fill_absent_fields_and_null_is_allowed_for_nullable_fields() -> None:
    event = OTHER.decode(as_json(CLICK))
    assert event["referrer"] is None and event["score"] == 1.0 and type(event["score"]) is float
    assert OTHER.decode(as_json(CLICK, referrer="x", seen="2018-04-01T12:00:00Z"))["seen"] == TX_MS
    full = {**CLICK, "referrer": "r", "score": 2.5, "seen": TX_MS}
    assert OTHER.decode(as_avro(full, OTHER_SCHEMA)) == full
    assert_conforms(event, OTHER.spec)


@pytest.mark.parametrize(
    "headers",
    [
        [("content-type", b"application/json")],
        [("Content-Type", b"application/json; charset=utf-8")],
        {"content-type": b"application/json"},
        [("trace-id", b"abc")],  # other headers: sniffed
        [],
    ],
)
def test_json_with_headers(headers: Any) -> None:
    assert DECODER.decode(b"  \n" + as_json(GOOD), headers) == GOOD


@pytest.mark.parametrize("content_type", [b"application/avro", b"avro/binary", b"AVRO/BINARY"])
def test_avro_content_types(content_type: bytes) -> None:
    assert DECODER.decode(as_avro(GOOD), {"content-type": content_type}) == GOOD


def test_avro_that_starts_with_a_brace_needs_the_header() -> None:
    record = {**GOOD, "transaction_id": -62}  # zigzag varint 123 == ord("{")
    payload = as_avro(record)
    assert payload[:1] == b"{"
    assert DECODER.decode(payload, AVRO_HEADER) == record
    with pytest.raises(InvalidEvent) as info:
        DECODER.decode(payload)
    assert info.value.reason == "undecodable" and "content-type: application/avro" in str(
        info.value
    )


# --- each reason code, with a concrete record ----------------------------------------------

DECODE_CASES = [
    ("too_large", b"{" + b" " * MAX_BYTES + b"}", None),
    ("too_large", b"\xff" * (MAX_BYTES + 1), None),  # checked before any parsing
    ("empty", None, None),
    ("empty", b"", None),
    ("undecodable", b'{"transaction_id": 1,', None),  # truncated JSON
    ("undecodable", b'{"transaction_id": "\xff"}', None),  # invalid UTF-8
    ("undecodable", b'{"a":' + b"[" * 30000 + b"]" * 30000 + b"}", None),  # nested too deep
    ("undecodable", b"hello", None),  # not JSON, and not Avro either
    ("undecodable", as_avro(GOOD)[:-3], None),  # truncated Avro
    ("undecodable", as_avro(GOOD) + b"\x00", None),  # trailing bytes
    ("undecodable", as_avro(GOOD), JSON_HEADER),  # the header says JSON
    ("undecodable", as_json(GOOD), [("content-type", b"text/csv")]),
    ("undecodable", b"\xff" * 12, None),  # a varint that never ends
]

VALIDATE_CASES = [
    ("not_an_object", b"[1, 2]", JSON_HEADER),
    ("not_an_object", b'"text"', JSON_HEADER),
    ("missing_field", as_json(without(GOOD, "tx_amount")), None),
    ("wrong_type", as_json(GOOD, customer_id=3.0), None),  # integral floats are refused
    ("wrong_type", as_json(GOOD, customer_id="7"), None),
    ("wrong_type", as_json(GOOD, customer_id=True), None),
    ("wrong_type", as_json(GOOD, customer_id=None), None),
    ("wrong_type", as_json(GOOD, tx_amount=False), None),
    ("wrong_type", as_json(GOOD, tx_amount="57.16"), None),
    ("wrong_type", as_json(GOOD, tx_datetime="2018-04-01T12:00:00"), None),  # no timezone
    ("wrong_type", as_json(GOOD, tx_datetime="yesterday"), None),
    ("wrong_type", as_json(GOOD, tx_datetime=1.5e12), None),
    ("not_finite", as_json(GOOD, tx_amount=math.nan), None),
    ("not_finite", as_json(GOOD, tx_amount=math.inf), None),
    (
        "not_finite",
        b'{"transaction_id": 1, "tx_datetime": 1, "customer_id": 1, '
        b'"terminal_id": 1, "tx_amount": -1e400}',
        None,
    ),
    ("not_finite", as_avro({**GOOD, "tx_amount": math.nan}), None),  # also from Avro
    ("out_of_range", as_json(GOOD, customer_id=2**63), None),
    ("out_of_range", as_json(GOOD, customer_id=-(2**63) - 1), None),
    ("out_of_range", as_json(GOOD, tx_amount=10**400), None),
    ("out_of_range", as_json(GOOD, tx_datetime=-1), None),
    ("out_of_range", as_json(GOOD, tx_datetime=TIME_MAX_MS + 1), None),
    ("out_of_range", as_json(GOOD, tx_datetime="1969-12-31T23:59:59Z"), None),
    ("out_of_range", as_avro({**GOOD, "tx_datetime": TX_MS * 1000}), None),  # micros via Avro
]


@pytest.mark.parametrize(("reason", "value", "headers"), DECODE_CASES)
def test_decode_stage_reasons(reason: str, value: bytes | None, headers: Any) -> None:
    with pytest.raises(InvalidEvent) as info:
        DECODER.decode(value, headers)
    assert (info.value.reason, info.value.stage) == (reason, "decode")
    assert "dead-letter topic" in str(info.value)


@pytest.mark.parametrize(("reason", "value", "headers"), VALIDATE_CASES)
def test_validate_stage_reasons(reason: str, value: bytes, headers: Any) -> None:
    with pytest.raises(InvalidEvent) as info:
        DECODER.decode(value, headers)
    assert (info.value.reason, info.value.stage) == (reason, "validate")
    assert "dead-letter topic" in str(info.value)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"user": 2**31}, "out_of_range"),  # int32
        ({"weight": 1e39}, "out_of_range"),  # float32
        ({"is_bot": 1}, "wrong_type"),
        ({"click_id": 5}, "wrong_type"),
        ({"click_id": "\ud800"}, "wrong_type"),  # a lone surrogate cannot go out as UTF-8
        ({"referrer": 1}, "wrong_type"),
    ],
)
def test_other_types(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        OTHER.decode(as_json(CLICK, **changes))
    assert info.value.reason == reason


def test_missing_field_without_default_even_when_nullable() -> None:
    with pytest.raises(InvalidEvent) as info:
        OTHER.decode(as_json(without(CLICK, "seen")))
    assert info.value.reason == "missing_field" and "'seen'" in str(info.value)


def test_corrupt_avro_is_undecodable() -> None:
    good = as_avro({**CLICK, "click_id": "abc", "referrer": None}, OTHER_SCHEMA)
    assert OTHER.decode(good, AVRO_HEADER)["click_id"] == "abc"
    union_at = len(good) - 8 - 2  # referrer's branch: before score (8 bytes) and seen (1)
    corrupt = [
        good.replace(b"abc", b"a\xffc"),  # invalid UTF-8 in a string
        b"\x05" + good[1:],  # negative string length
        good[:union_at] + b"\x0a" + good[union_at + 1 :],  # union branch 5 of 2
    ]
    for bad in corrupt:
        with pytest.raises(InvalidEvent) as info:
            OTHER.decode(bad, AVRO_HEADER)
        assert (info.value.reason, info.value.stage) == ("undecodable", "decode")


def test_messages_say_which_field_what_came_and_what_to_do() -> None:
    with pytest.raises(InvalidEvent) as info:
        DECODER.decode(as_json(GOOD, tx_amount=math.nan))
    message = str(info.value)
    assert "transaction_id=42" in message and "tx_amount" in message and "NaN" in message
    assert "Fix the producer" in message
    with pytest.raises(InvalidEvent) as info:
        DECODER.decode(as_json(GOOD, customer_id=3.0))
    assert "3.0" in str(info.value) and "without a decimal point" in str(info.value)
    with pytest.raises(InvalidEvent) as info:
        DECODER.decode(as_json(GOOD, tx_datetime=TX_MS * 1_000_000))
    assert "send milliseconds" in str(info.value)
    with pytest.raises(InvalidEvent) as info:
        DECODER.decode(as_json(GOOD, customer_id="x" * 10_000))
    assert len(str(info.value)) < 400  # the received value is truncated


@pytest.mark.parametrize(
    "field_type",
    [
        "bytes",
        {"type": "enum", "name": "E", "symbols": ["A"]},
        {"type": "long", "logicalType": "timestamp-micros"},
        ["null", "long", "string"],
        {"type": "array", "items": "long"},
    ],
)
def test_unsupported_field_types_are_a_config_error(field_type: Any) -> None:
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "Bad",
            "fields": [{"name": "id", "type": "long"}, {"name": "x", "type": field_type}],
        }
    )
    with pytest.raises(ConfigError, match=r"Bad\.x"):
        EventDecoder(RecordSpec(schema, id_field="id", time_field="id"), max_bytes=MAX_BYTES)


# --- properties ----------------------------------------------------------------------------

ANY_HEADERS = st.none() | st.lists(
    st.tuples(
        st.sampled_from(["content-type", "Content-Type", "x"]),
        st.sampled_from([b"application/json", b"application/avro", b"avro/binary", b"?"])
        | st.binary(max_size=20),
    ),
    max_size=2,
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=INT64_MIN - 2, max_value=INT64_MAX + 2)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["2018-04-01T12:00:00Z", "2018-04-01T12:00:00", "+275760-09-13T00:00Z"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)
FIELD_NAMES = st.sampled_from([*SPEC.fields, *OTHER.spec.fields, "other"])


def decodes_or_is_invalid(decoder: EventDecoder, value: bytes | None, headers: Any) -> None:
    try:
        event = decoder.decode(value, headers)
    except InvalidEvent as exc:
        assert exc.reason and exc.stage in ("decode", "validate") and str(exc)
        return
    assert_conforms(event, decoder.spec)


@settings(max_examples=300, deadline=None)
@given(value=st.binary(max_size=80) | st.none(), headers=ANY_HEADERS)
def test_arbitrary_bytes_decode_or_raise_invalid_event(value: bytes | None, headers: Any) -> None:
    decodes_or_is_invalid(DECODER, value, headers)
    decodes_or_is_invalid(OTHER, value, headers)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=st.dictionaries(FIELD_NAMES, JSON_VALUES), base=st.sampled_from([GOOD, CLICK, {}]))
def test_arbitrary_json_objects_decode_or_raise_invalid_event(
    obj: dict[str, Any], base: dict[str, Any]
) -> None:
    payload = json.dumps({**base, **obj}).encode()  # NaN/Infinity literals included
    decodes_or_is_invalid(DECODER, payload, None)
    decodes_or_is_invalid(OTHER, payload, None)


@st.composite
def transactions(draw: st.DrawFn) -> dict[str, Any]:
    longs = st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
    return {
        "transaction_id": draw(longs),
        "tx_datetime": draw(st.integers(min_value=TIME_MIN_MS, max_value=TIME_MAX_MS)),
        "customer_id": draw(longs),
        "terminal_id": draw(longs),
        "tx_amount": draw(st.floats(allow_nan=False, allow_infinity=False)),
    }


@settings(max_examples=300, deadline=None)
@given(record=transactions())
def test_valid_transactions_round_trip_through_json_and_avro(record: dict[str, Any]) -> None:
    assert DECODER.decode(as_json(record)) == record
    assert DECODER.decode(as_avro(record), AVRO_HEADER) == record
    instant = EPOCH + timedelta(milliseconds=record["tx_datetime"])
    as_text = {**record, "tx_datetime": instant.isoformat().replace("+00:00", "Z")}
    assert DECODER.decode(as_json(as_text)) == record


def test_training_and_backtests_decode_with_the_records_headers() -> None:
    """Offline reads keep the headers: an Avro record that starts with a brace is scored
    online (its content-type says Avro), so a training set or a backtest must not skip it,
    and a record the worker dead-letters for its content-type is skipped offline too."""
    from models.from_topics import decode_slice
    from models.topic_reader import TopicSlice

    brace = {**GOOD, "transaction_id": -62}
    records = [
        (b"7", as_avro(brace), TX_MS, 0, 10),
        (b"7", as_json(GOOD), TX_MS, 0, 11),
        (b"7", as_json(GOOD, transaction_id=43), TX_MS, 0, 12),
    ]
    data = TopicSlice(
        "events",
        0,
        2**63 - 1,
        {0: (10, 13)},
        records,
        {(0, 10): tuple(AVRO_HEADER), (0, 12): (("content-type", b"text/csv"),)},
    )
    assert decode_slice(SPEC, data, MAX_BYTES) == [brace, GOOD]
