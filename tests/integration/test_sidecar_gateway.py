"""The ``otlphttp`` exporter forwarding to a gateway tier: a second sidecar, its OTLP receiver under uvicorn on
127.0.0.1, stands in for the OpenTelemetry Collector gateway. What the gateway exposes equals what the sidecar
exposes, and both equal the sums of what the workers sent."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_monitoring.settings import Settings
from otel_monitoring.sidecar.config import CollectorConfig
from otel_monitoring.sidecar.service import CollectorService
from tests.support import free_port

SETTINGS = Settings.model_validate({"processing": {"pseudonym_key": "integration-pseudonym-key-0123456789"}})
CUMULATIVE = AggregationTemporality.CUMULATIVE
T0 = 1_700_000_000_000_000_000
# Per worker: (counter value per route, histogram observations bucketed by [0.1, 1.0]).
WORKERS = {"w1": ({"/a": 3, "/b": 5}, [1, 2, 0]), "w2": ({"/a": 4}, [0, 1, 1])}


def worker_batch(instance: str, routes: dict[str, int], buckets: list[int]) -> MetricsData:
    counter = Metric(
        "http.server.requests",
        "",
        "{request}",
        Sum([NumberDataPoint({"route": r}, T0, T0 + 10**9, v) for r, v in routes.items()], CUMULATIVE, True),
    )
    point = HistogramDataPoint({}, T0, T0 + 10**9, sum(buckets), 0.5 * sum(buckets), buckets, [0.1, 1.0], 0, 2)
    histogram = Metric("job.duration", "", "s", Histogram([point], CUMULATIVE))
    scope = ScopeMetrics(InstrumentationScope("worker"), [counter, histogram], "")
    resource = Resource({"service.name": "content-api", "service.instance.id": instance})
    return MetricsData([ResourceMetrics(resource, [scope], "")])


def config(receiver_port: int, exporters: dict[str, Any]) -> CollectorConfig:
    return CollectorConfig.model_validate(
        {
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{receiver_port}"}}}},
            "processors": {"batch": {"timeout": "20ms"}},
            "exporters": {"prometheus": {"endpoint": "127.0.0.1:0"}, **exporters},
            "service": {
                "telemetry": {"metrics": {"level": "none"}},
                "pipelines": {
                    "metrics": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["prometheus", *exporters]}
                },
            },
        }
    )


def samples(service: CollectorService) -> dict[str, float]:
    text = service.prometheus_exporters["prometheus"].render().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"}


@pytest.mark.parametrize(("encoding", "compression"), [("proto", "gzip"), ("json", "none")])
def test_a_gateway_fed_by_otlphttp_exposes_the_values_the_sidecar_received(encoding: str, compression: str) -> None:
    gateway_port = free_port()
    gateway = CollectorService(config(gateway_port, {}), settings=SETTINGS)
    otlphttp = {"endpoint": f"http://127.0.0.1:{gateway_port}", "encoding": encoding, "compression": compression}
    sidecar = CollectorService(config(0, {"otlphttp/gateway": otlphttp}), settings=SETTINGS)

    async def scenario() -> None:
        ready = [asyncio.Event(), asyncio.Event()]
        tasks = [asyncio.create_task(s.serve(r.set)) for s, r in zip((gateway, sidecar), ready, strict=True)]
        try:
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), timeout=20)
            transport = httpx.ASGITransport(app=cast(Any, sidecar.receivers["otlp"]))
            async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as client:
                for instance, (routes, buckets) in WORKERS.items():
                    body = encode_metrics(worker_batch(instance, routes, buckets)).SerializeToString()
                    response = await client.post(
                        "/v1/metrics", content=body, headers={"content-type": "application/x-protobuf"}
                    )
                    assert response.status_code == 200
            await sidecar.pipelines["metrics"].flush()
            exporter = sidecar.exporters["otlphttp/gateway"]
            assert await asyncio.to_thread(exporter.exporter.flush, 10)  # type: ignore[attr-defined]
            # The gateway batches too: wait until it shows what it received.
            for _ in range(200):
                if samples(gateway) == samples(sidecar):
                    break
                await asyncio.sleep(0.02)
        finally:
            for service in (sidecar, gateway):
                service.request_stop()
            assert await asyncio.gather(*tasks) == [0, 0]

    asyncio.run(scenario())

    at_sidecar, at_gateway = samples(sidecar), samples(gateway)
    assert at_gateway == at_sidecar
    by_route: dict[str, int] = {}
    for routes, _ in WORKERS.values():
        for route, value in routes.items():
            by_route[route] = by_route.get(route, 0) + value
    requests = {k: v for k, v in at_gateway.items() if k.startswith("http_server_requests_total{")}
    assert sorted(requests.values()) == sorted(float(v) for v in by_route.values())
    count = sum(sum(buckets) for _, buckets in WORKERS.values())
    assert [v for k, v in at_gateway.items() if k.startswith("job_duration_seconds_count")] == [float(count)]
    counts = sidecar.exporters["otlphttp/gateway"].counts()
    assert (counts.sent, counts.failed, counts.enqueue_failed) == (sum(len(r) + 1 for r, _ in WORKERS.values()), 0, 0)
