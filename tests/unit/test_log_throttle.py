import logging

from streams.log_throttle import RepeatThrottle


def _record(msg: str, name: str = "aiokafka") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, None, None)


def test_repeats_are_held_back_then_counted(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("streams.log_throttle.time.monotonic", lambda: clock[0])
    throttle = RepeatThrottle(interval=30)
    assert throttle.filter(_record("Unable connect to node %s"))
    assert not any(throttle.filter(_record("Unable connect to node %s")) for _ in range(500))
    assert throttle.filter(_record("another message"))
    assert throttle.filter(_record("Unable connect to node %s", name="other.logger"))
    clock[0] += 31
    again = _record("Unable connect to node %s")
    assert throttle.filter(again)
    assert "[repeated 500 more times in 30s]" in again.msg


def test_info_lines_are_never_held_back(monkeypatch):
    monkeypatch.setattr("streams.log_throttle.time.monotonic", lambda: 100.0)
    throttle = RepeatThrottle(interval=30)
    info = [
        logging.LogRecord("streams.worker", logging.INFO, __file__, 1, "paused %s", (p,), None)
        for p in range(5)
    ]
    assert all(throttle.filter(r) for r in info)  # one state change per line, all shown
    warning = logging.LogRecord("streams.worker", logging.WARNING, __file__, 1, "x %s", (1,), None)
    assert throttle.filter(warning) and not throttle.filter(warning)
