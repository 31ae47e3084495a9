"""RecordCodec: system records round-trip through schemaless Avro, timestamps as exact int ms."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.codecs import RecordCodec, RecordEncodeError, wire_schema
from streams.errors import ConfigError, InvalidEvent
from streams.settings import Settings

SCHEMAS = Settings().schemas_dir
PREDICTIONS = RecordCodec.from_file(SCHEMAS, "prediction.avsc")
DEAD_LETTERS = RecordCodec.from_file(SCHEMAS, "dead_letter.avsc")
TX_MS = 1_522_584_000_123  # 2018-04-01T12:00:00.123Z

PREDICTION = {
    "prediction_id": "3f2a",
    "pipeline": "fraud",
    "event_id": "42",
    "entity_key": "7",
    "event_time": TX_MS,
    "model_name": "fraud",
    "model_version": 3,
    "variant": "champion",
    "score": 0.125,
    "features": [57.16, 0.0, 1.0],
    "source_partition": 2,
    "source_offset": 1234,
    "ingest_time": TX_MS + 5,
    "scored_time": TX_MS + 9,
    "batch_size": 1000,
    "batch_latency_ms": 3.5,
    "shadows": [{"model_name": "fraud", "model_version": 4, "variant": "challenger", "score": 0.5}],
}
DEAD_LETTER = {
    "original_value": b"\xff{not json",
    "original_key": None,
    "source_topic": "rtscore.events",
    "source_partition": 0,
    "source_offset": 17,
    "source_timestamp": TX_MS,
    "stage": "decode",
    "reason": "undecodable",
    "error": "Transaction record is not valid UTF-8 JSON …",
    "pipeline": "fraud",
    "dead_lettered_time": TX_MS + 1,
}

INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(max_size=40)
FLOATS = st.floats(allow_nan=False)  # NaN != NaN; infinities round-trip


def test_prediction_round_trip() -> None:
    data = PREDICTIONS.encode(PREDICTION, strict=True)
    assert PREDICTIONS.decode(data) == PREDICTION
    assert PREDICTIONS.name == "Prediction"


def test_dead_letter_round_trip() -> None:
    data = DEAD_LETTERS.encode(DEAD_LETTER, strict=True)
    assert DEAD_LETTERS.decode(data) == DEAD_LETTER
    empty = {**DEAD_LETTER, "original_value": None, "original_key": b"k"}
    assert DEAD_LETTERS.decode(DEAD_LETTERS.encode(empty)) == empty


@st.composite
def predictions(draw: st.DrawFn) -> dict[str, Any]:
    """Any Prediction the schema allows, fields in schema order."""
    by_type = {"string": TEXT, "int": INT32, "long": INT64, "double": FLOATS}
    record: dict[str, Any] = {}
    shadow = st.fixed_dictionaries(
        {"model_name": TEXT, "model_version": INT32, "variant": TEXT, "score": FLOATS}
    )
    for field in PREDICTIONS.schema["fields"]:
        avro_type = field["type"]
        if field["name"] == "shadows":
            record["shadows"] = draw(st.lists(shadow, max_size=3))
        elif isinstance(avro_type, dict) and avro_type["type"] == "array":
            record[field["name"]] = draw(st.lists(FLOATS, max_size=20))
        else:
            name = avro_type["type"] if isinstance(avro_type, dict) else avro_type
            record[field["name"]] = draw(by_type[name])
    return record


@settings(max_examples=200, deadline=None)
@given(record=predictions())
def test_any_prediction_round_trips(record: dict[str, Any]) -> None:
    decoded = PREDICTIONS.decode(PREDICTIONS.encode(record, strict=True))
    assert decoded == record and list(decoded) == list(record)


@settings(max_examples=200, deadline=None)
@given(original=st.binary(max_size=100) | st.none(), key=st.binary(max_size=10) | st.none())
def test_any_dead_letter_round_trips(original: bytes | None, key: bytes | None) -> None:
    record = {**DEAD_LETTER, "original_value": original, "original_key": key}
    assert DEAD_LETTERS.decode(DEAD_LETTERS.encode(record)) == record


def test_timestamps_may_be_written_as_datetimes_and_always_read_as_int_millis() -> None:
    as_datetime = {**PREDICTION, "event_time": datetime(2018, 4, 1, 12, 0, 0, 123_000, tzinfo=UTC)}
    data = PREDICTIONS.encode(as_datetime)
    assert data == PREDICTIONS.encode(PREDICTION)
    event_time = PREDICTIONS.decode(data)["event_time"]
    assert event_time == TX_MS and type(event_time) is int


def test_far_timestamps_still_decode_as_ints() -> None:
    far = {**PREDICTION, "event_time": 2**62}  # past year 9999: no datetime could hold it
    assert PREDICTIONS.decode(PREDICTIONS.encode(far))["event_time"] == 2**62


@pytest.mark.parametrize(
    "changes",
    [
        {"model_version": 3.7},  # fastavro alone would write 3
        {"model_version": True},
        {"score": "high"},
        {"features": [1.0, None]},
    ],
)
def test_strict_encode_refuses_records_that_do_not_fit(changes: dict[str, Any]) -> None:
    with pytest.raises(RecordEncodeError):
        PREDICTIONS.encode({**PREDICTION, **changes}, strict=True)


def test_encode_errors_name_the_field() -> None:
    missing = {k: v for k, v in PREDICTION.items() if k != "score"}
    with pytest.raises(RecordEncodeError, match="score"):
        PREDICTIONS.encode(missing)
    with pytest.raises(RecordEncodeError, match="source_offset"):
        PREDICTIONS.encode({**PREDICTION, "source_offset": "x"})
    assert issubclass(RecordEncodeError, ValueError)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x06ab", PREDICTIONS.encode(PREDICTION)[:-1], PREDICTIONS.encode(PREDICTION) + b"!"],
)
def test_corrupt_records_are_undecodable(data: bytes) -> None:
    with pytest.raises(InvalidEvent) as info:
        PREDICTIONS.decode(data)
    assert (info.value.reason, info.value.stage) == ("undecodable", "decode")
    assert "Prediction" in str(info.value)


def test_from_file_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        RecordCodec.from_file(tmp_path, "nope.avsc")
    (tmp_path / "broken.avsc").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        RecordCodec.from_file(tmp_path, "broken.avsc")
    (tmp_path / "bad.avsc").write_text(
        json.dumps({"type": "record", "name": "B", "fields": [{"name": "x", "type": "nope"}]})
    )
    with pytest.raises(ConfigError, match="B"):
        RecordCodec.from_file(tmp_path, "bad.avsc")


def test_wire_schema_drops_only_time_logical_types() -> None:
    schema = {
        "type": "record",
        "name": "W",
        "fields": [
            {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "u", "type": ["null", {"type": "string", "logicalType": "uuid"}]},
            {
                "name": "a",
                "type": {"type": "array", "items": {"type": "int", "logicalType": "date"}},
            },
        ],
    }
    fields = {f["name"]: f["type"] for f in wire_schema(schema)["fields"]}
    assert fields["t"] == {"type": "long"}
    assert fields["u"][1]["logicalType"] == "uuid"
    assert fields["a"]["items"] == {"type": "int"}
    assert schema["fields"][0]["type"]["logicalType"] == "timestamp-millis"  # not mutated
