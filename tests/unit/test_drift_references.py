"""References by version: loaded once each, a version without a usable profile falls back to
the champion of the start (one warning, counted), and a window is pinned to its first row's
decider."""

from __future__ import annotations

import pytest

from streams.drift.references import References, first_deciders
from streams.drift.report import Reference
from streams.drift.window_state import parse_pin, pin_value
from streams.errors import ConfigError, RegistryError
from tests import drift_cases as dc

NAMES = ["a", "b", "c"]


def test_versions_are_loaded_once_and_unusable_ones_fall_back_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    champion = dc.reference_for(NAMES)
    other = dc.reference_for(NAMES, seed=1)
    loads: list[tuple[str, int]] = []
    fallbacks: list[tuple[str, int]] = []

    def load(name: str, version: int) -> Reference:
        loads.append((name, version))
        if version == 2:
            return other
        if version == 3:
            raise ConfigError(
                f"{name} v{version} has no reference profile to compare with",
                hint="train it again with `rtscore train` (it stores one) and promote it",
            )
        raise RegistryError(f"{name} has no version {version}")

    refs = References(champion, load, lambda n, v: fallbacks.append((n, v)))
    assert refs.get("fraud", 1) is champion, "the champion is not read again"
    assert refs.get("fraud", 2) is other and refs.get("fraud", 2) is other
    assert refs.get("fraud", 3) is champion and refs.get("fraud", 3) is champion
    assert refs.get("fraud", 9) is champion
    assert loads == [("fraud", 2), ("fraud", 3), ("fraud", 9)]
    assert fallbacks == [("fraud", 3), ("fraud", 9)]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2
    assert "fraud v3" in warnings[0] and "fraud v1" in warnings[0]
    assert "rtscore train" in warnings[0]


def test_a_window_takes_the_decider_of_its_first_row_in_the_batch() -> None:
    windows = [10, 20, 10, 30, 20]
    deciders = [("m", 2), ("m", 1), ("m", 1), ("n", 4), ("m", 2)]
    assert first_deciders(windows, deciders) == {10: ("m", 2), 20: ("m", 1), 30: ("n", 4)}
    assert first_deciders([], []) == {}


@pytest.mark.parametrize("name", ["fraud", "fraud.v-2_x", "9lives"])
def test_a_pin_reads_back_as_written(name: str) -> None:
    assert parse_pin(pin_value((name, 12))) == (name, 12)
    assert parse_pin(pin_value((name, 3)).encode()) == (name, 3)
