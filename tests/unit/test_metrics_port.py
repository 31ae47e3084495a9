"""A metrics port already in use stops a processor with an error that says what to do."""

from __future__ import annotations

import socket

import pytest
from prometheus_client import CollectorRegistry

from streams.errors import ConfigError
from streams.join.metrics import JoinMetrics
from streams.metrics import serve_metrics


def test_a_port_in_use_names_the_processor_and_the_fix():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as caught:
            JoinMetrics().serve(port)
    err = caught.value
    assert f"join processor's metrics port 127.0.0.1:{port}" in err.message
    assert f"RTSCORE_METRICS_PORT {port - 1} + 1" in err.message
    assert "3 apart" in (err.hint or "") and str(port + 2) in (err.hint or "")


def test_port_zero_serves_nothing():
    serve_metrics(CollectorRegistry(), 0, "127.0.0.1", "scoring", offset=0)
