"""gunicorn --preload forks workers from a master that already built the pipeline: each keeps exporting."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import OTLPRecorder, free_port, running

BIN = Path(sys.executable).parent


@pytest.fixture
def recorder() -> Iterator[OTLPRecorder]:
    receiver = OTLPRecorder()
    yield receiver
    receiver.close()


@pytest.mark.skipif(not (BIN / "gunicorn").exists(), reason="gunicorn is not installed")
def test_preloaded_gunicorn_workers_export_as_distinct_instances(recorder: OTLPRecorder) -> None:
    port = free_port()
    env = {
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": recorder.endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        "OTEL_SERVICE_NAME": "orders",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    argv = [
        str(BIN / "opentelemetry-instrument"),
        str(BIN / "gunicorn"),
        "--preload",
        "--workers",
        "2",
        "--worker-class",
        "uvicorn.workers.UvicornWorker",
        "--bind",
        f"127.0.0.1:{port}",
        "tests.integration.plain_app:app",
    ]
    base = f"http://127.0.0.1:{port}"
    sent = 0
    worker_pids: set[int] = set()
    with running(argv, f"{base}/users/0/orders/0", env=env, timeout=30):  # readiness probe on another route
        deadline = time.monotonic() + 20
        while len(worker_pids) < 2 and time.monotonic() < deadline:
            with httpx.Client() as client:  # a new connection each time, so both workers get some
                worker_pids.add(client.get(f"{base}/pid").json()["pid"])
                sent += 1
        assert len(worker_pids) == 2, "gunicorn never spread requests over both workers"
        expected = {str(pid) for pid in worker_pids}
        while time.monotonic() < deadline:
            exported = latest_counts_by_pid(recorder)
            if set(exported) >= expected and sum(exported[pid] for pid in expected) >= sent:
                break
            time.sleep(0.2)

    exported = latest_counts_by_pid(recorder)
    assert set(exported) >= expected, f"workers {expected} exported {exported}"
    assert sum(exported[pid] for pid in expected) == sent
    instance_ids = {
        resource["service.instance.id"] for resource, _, _ in recorder.points("http.server.request.duration")
    }
    assert len(instance_ids) >= 2  # one per worker, so a collector never merges their cumulative series


def latest_counts_by_pid(recorder: OTLPRecorder) -> dict[str, int]:
    """The last cumulative request count each process exported for the /pid route."""
    latest: dict[str, int] = {}
    for resource, _, point in recorder.points("http.server.request.duration"):
        attributes = {kv.key: kv.value for kv in point.attributes}  # type: ignore[attr-defined]
        if attributes.get("http.route") and attributes["http.route"].string_value == "/pid":
            latest[resource.get("process.pid", "?")] = point.count  # type: ignore[attr-defined]
    return latest
