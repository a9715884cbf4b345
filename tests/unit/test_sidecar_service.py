"""The sidecar runtime: pipeline wiring, batch, memory limiter, health, own metrics, refusals and the CLI."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_monitoring.cli import main
from otel_monitoring.settings import Settings
from otel_monitoring.sidecar.config import (
    CollectorConfig,
    CollectorConfigError,
    DebugExporterConfig,
    HealthCheckExtensionConfig,
    MemoryLimiterConfig,
)
from otel_monitoring.sidecar.memory_limiter import MemoryLimiter
from otel_monitoring.sidecar.receiver import ReceiverBusy
from otel_monitoring.sidecar.service import CollectorService, DebugExporter, ExporterCounts, HealthCheck, count_points
from tests.support import free_port

KEY = "unit-test-pseudonym-key-0123456789"
MiB = 2**20


def _config(pipelines: dict[str, Any], **sections: Any) -> CollectorConfig:
    document: dict[str, Any] = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}}},
        "processors": {},
        "exporters": {},
        "extensions": {"health_check": {"endpoint": "127.0.0.1:0"}},
        "service": {"extensions": ["health_check"], "pipelines": pipelines},
    }
    for section, value in sections.items():
        document[section] = value
    return CollectorConfig.model_validate(document)


def _service(config: CollectorConfig, **kwargs: Any) -> CollectorService:
    settings = Settings.model_validate({"processing": {"pseudonym_key": KEY}})
    return CollectorService(config, settings=settings, **kwargs)


def _batch(instance: str, value: int, attributes: dict[str, Any] | None = None, points: int = 1) -> MetricsData:
    data_points = [NumberDataPoint({**(attributes or {}), "n": str(i)}, 1, 2, value + i) for i in range(points)]
    metric = Metric("requests", "", "1", Sum(data_points, AggregationTemporality.CUMULATIVE, True))
    resource = Resource({"service.name": "shop", "service.instance.id": instance})
    return MetricsData([ResourceMetrics(resource, [ScopeMetrics(InstrumentationScope("app"), [metric], "")], "")])


@asynccontextmanager
async def _running(service: CollectorService) -> AsyncIterator[httpx.AsyncClient]:
    ready = asyncio.Event()
    task = asyncio.create_task(service.serve(ready.set))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    assert ready.is_set(), "the service did not start"
    transport = httpx.ASGITransport(app=cast(Any, service.receivers["otlp"]))  # typed with dict scopes
    async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as client:
        try:
            yield client
        finally:
            service.request_stop()
            assert await task == 0


async def _post(client: httpx.AsyncClient, data: MetricsData) -> httpx.Response:
    body = encode_metrics(data).SerializeToString()
    return await client.post("/v1/metrics", content=body, headers={"content-type": "application/x-protobuf"})


def _samples(service: CollectorService, exporter_id: str, name: str) -> dict[str, float]:
    text = service.prometheus_exporters[exporter_id].render().decode()
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith(name)}


def test_a_receiver_shared_by_two_pipelines_feeds_both() -> None:
    config = _config(
        {
            "metrics/clean": {"receivers": ["otlp"], "processors": ["sanitize"], "exporters": ["prometheus"]},
            "metrics/raw": {"receivers": ["otlp"], "exporters": ["prometheus/raw", "debug"]},
        },
        processors={"sanitize": None},
        exporters={
            "prometheus": {"endpoint": "127.0.0.1:0"},
            "prometheus/raw": {"endpoint": "127.0.0.1:0"},
            "debug": None,
        },
    )
    service = _service(config)
    sent = _batch("w1", 5, {"client_id": "acme-corp-42"})

    async def scenario() -> None:
        async with _running(service) as client:
            assert (await _post(client, sent)).status_code == 200

    asyncio.run(scenario())
    clean = _samples(service, "prometheus", "requests_total")
    raw = _samples(service, "prometheus/raw", "requests_total")
    assert sum(clean.values()) == sum(raw.values()) == 5
    assert all("acme-corp-42" in key for key in raw) and not any("acme-corp-42" in key for key in clean)
    assert service.exporters["debug"].counts().sent == count_points(sent)


def test_batch_sends_at_send_batch_size_and_flushes_the_rest_on_shutdown() -> None:
    config = _config(
        {"metrics": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["prometheus"]}},
        processors={"batch": {"send_batch_size": 3, "timeout": "1h"}},
        exporters={"prometheus": {"endpoint": "127.0.0.1:0"}},
    )
    service = _service(config)
    exporter = service.exporters["prometheus"]
    sent_while_running: list[int] = []

    async def scenario() -> None:
        async with _running(service) as client:
            await _post(client, _batch("w1", 1, points=2))
            sent_while_running.append(exporter.counts().sent)  # 2 < 3: held
            await _post(client, _batch("w2", 1, points=2))
            sent_while_running.append(exporter.counts().sent)  # 4 >= 3: sent together
            await _post(client, _batch("w3", 1, points=1))
            sent_while_running.append(exporter.counts().sent)  # held until shutdown

    asyncio.run(scenario())
    assert sent_while_running == [0, 4, 4]
    assert exporter.counts().sent == 5


def test_memory_limiter_refuses_with_503_and_retry_after_while_above_the_soft_limit() -> None:
    usage = [900 * MiB]
    now = [0.0]
    config = _config(
        {"metrics": {"receivers": ["otlp"], "processors": ["memory_limiter"], "exporters": ["prometheus"]}},
        processors={"memory_limiter": {"limit_mib": 1000, "check_interval": "1s"}},
        exporters={"prometheus": {"endpoint": "127.0.0.1:0"}},
    )
    service = _service(config, memory_usage=lambda: usage[0], clock=lambda: now[0])
    statuses: list[tuple[int, str | None]] = []

    async def scenario() -> None:
        async with _running(service) as client:
            refused = await _post(client, _batch("w1", 3))
            statuses.append((refused.status_code, refused.headers.get("retry-after")))
            usage[0] = 100 * MiB
            still_refused = await _post(client, _batch("w1", 3))  # not measured again within check_interval
            statuses.append((still_refused.status_code, still_refused.headers.get("retry-after")))
            now[0] = 1.0
            accepted = await _post(client, _batch("w1", 3))
            statuses.append((accepted.status_code, accepted.headers.get("retry-after")))

    asyncio.run(scenario())
    assert statuses == [(503, "1"), (503, "1"), (200, None)]
    stats = service.receivers["otlp"].stats
    assert (stats.refused_points, stats.accepted_points) == (2, 1)


def test_memory_limiter_measures_at_most_once_per_check_interval() -> None:
    now = [0.0]
    calls: list[int] = []

    def usage() -> int:
        calls.append(1)
        return 10 * MiB

    limiter = MemoryLimiter(
        MemoryLimiterConfig.model_validate({"limit_mib": 100, "check_interval": "1s"}),
        memory_usage=usage,
        clock=lambda: now[0],
    )
    for step in (0.0, 0.3, 0.9, 1.0, 1.5):
        now[0] = step
        limiter.check()
    assert len(calls) == 2  # at 0.0 and 1.0
    assert limiter.soft_limit == 80 * MiB and limiter.hard_limit == 100 * MiB


def test_memory_limiter_uses_the_percentage_of_available_memory() -> None:
    limiter = MemoryLimiter(MemoryLimiterConfig(), memory_usage=lambda: 700, total_memory=lambda: 1000)
    with pytest.raises(ReceiverBusy):
        limiter.check()  # 80% of 1000 is the hard limit, 80% of that (640) the soft one
    assert (limiter.hard_limit, limiter.soft_limit) == (800, 640)


def test_health_answers_200_only_while_running() -> None:
    running = [False]
    app = HealthCheck(HealthCheckExtensionConfig(path="/health"), lambda: running[0])

    async def get(path: str) -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://h") as client:
            return (await client.get(path)).status_code

    before = asyncio.run(get("/health"))
    running[0] = True
    assert (before, asyncio.run(get("/health")), asyncio.run(get("/other"))) == (503, 200, 404)


def test_service_health_is_503_after_stop_and_data_is_refused_while_stopping() -> None:
    config = _config(
        {"metrics": {"receivers": ["otlp"], "exporters": ["debug"]}},
        exporters={"debug": None},
    )
    service = _service(config)
    health = service.health_checks["health_check"]
    seen: list[int] = []

    async def status() -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=health), base_url="http://h") as client:
            return (await client.get("/")).status_code

    async def scenario() -> None:
        seen.append(await status())
        async with _running(service):
            seen.append(await status())
        seen.append(await status())

    asyncio.run(scenario())
    assert seen == [503, 200, 503]


@pytest.mark.parametrize(
    ("exporter", "settings"),
    [
        ("otlp", {"endpoint": "127.0.0.1:9", "tls": {"insecure": True}}),
        ("otlphttp", {"endpoint": "http://127.0.0.1:9"}),
        ("pushgateway", {"url": "http://127.0.0.1:9"}),
        ("prometheusremotewrite", {"endpoint": "http://127.0.0.1:9/api/v1/write"}),
    ],
)
def test_every_exporter_type_is_built_and_reports_its_counts(exporter: str, settings: dict[str, Any]) -> None:
    config = _config(
        {"metrics": {"receivers": ["otlp"], "exporters": [f"{exporter}/gw"]}},
        exporters={f"{exporter}/gw": settings},
    )
    service = _service(config)
    assert service.exporters[f"{exporter}/gw"].counts().sent == 0
    assert f'exporter="{exporter}/gw"' in service.render_own_metrics()


def test_grpc_and_http_on_one_receiver_feed_the_same_pipeline() -> None:
    import grpc

    from otel_monitoring.sidecar.grpc_receiver import METRICS_EXPORT_METHOD

    grpc_port = free_port()
    config = _config(
        {"metrics": {"receivers": ["otlp"], "exporters": ["prometheus"]}},
        receivers={
            "otlp": {
                "protocols": {
                    "http": {"endpoint": "127.0.0.1:0"},
                    "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
                }
            }
        },
        exporters={"prometheus": {"endpoint": "127.0.0.1:0"}},
    )
    service = _service(config)

    async def scenario() -> None:
        async with _running(service) as client:
            assert (await _post(client, _batch("w1", 5))).status_code == 200
            async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                export = channel.unary_unary(METRICS_EXPORT_METHOD)
                await export(encode_metrics(_batch("w2", 7)).SerializeToString(), timeout=5)

    asyncio.run(scenario())
    assert sum(_samples(service, "prometheus", "requests_total").values()) == 12
    own = service.render_own_metrics()
    assert 'otelcol_receiver_accepted_metric_points_total{receiver="otlp",transport="grpc"} 1' in own
    assert 'otelcol_receiver_accepted_metric_points_total{receiver="otlp",transport="http"} 1' in own


def test_remote_write_is_built_from_its_config() -> None:
    config = _config(
        {"metrics": {"receivers": ["otlp"], "exporters": ["prometheusremotewrite"]}},
        exporters={"prometheusremotewrite": {"endpoint": "http://127.0.0.1:9/api/v1/write"}},
    )
    service = _service(config)
    exporter = service.exporters["prometheusremotewrite"]
    counts = exporter.counts()
    own = service.render_own_metrics()
    exporter.shutdown(0.1)
    assert (counts.sent, counts.failed, counts.queue_size, counts.queue_capacity) == (0, 0, 0, 10000)
    assert 'otelcol_exporter_queue_size{exporter="prometheusremotewrite",data_type="metrics"} 0.0' in own
    assert 'otelcol_exporter_queue_capacity{exporter="prometheusremotewrite",data_type="metrics"} 10000.0' in own


@pytest.mark.parametrize(
    ("exporter", "settings"),
    [
        ("otlphttp/gw", {"endpoint": "http://127.0.0.1:9"}),
        ("otlp/gw", {"endpoint": "127.0.0.1:9", "tls": {"insecure": True}}),
    ],
)
def test_otlp_exporters_are_built_on_the_sending_queue(exporter: str, settings: dict[str, Any]) -> None:
    config = _config(
        {"metrics": {"receivers": ["otlp"], "exporters": [exporter]}},
        exporters={exporter: {**settings, "sending_queue": {"queue_size": 42}}},
    )
    service = _service(config)

    built = service.exporters[exporter]
    built.start()
    built.shutdown(0.1)

    assert built.counts().queue_capacity == 42
    own = service.render_own_metrics()
    assert f'otelcol_exporter_queue_capacity{{exporter="{exporter}",data_type="metrics"}} 42.0' in own


def _queued_config(directory: Path, endpoint: str, create_directory: bool = True) -> CollectorConfig:
    pipelines = {"metrics": {"receivers": ["otlp"], "exporters": ["otlphttp/gw", "prometheusremotewrite"]}}
    return _config(
        pipelines,
        exporters={
            "otlphttp/gw": {"endpoint": endpoint, "sending_queue": {"storage": "file_storage/q", "queue_size": 7}},
            "prometheusremotewrite": {
                "endpoint": endpoint + "/api/v1/write",
                "remote_write_queue": {"storage": "file_storage/q"},
            },
        },
        extensions={
            "health_check": {"endpoint": "127.0.0.1:0"},
            "file_storage/q": {"directory": str(directory), "create_directory": create_directory},
        },
        service={"extensions": ["health_check", "file_storage/q"], "pipelines": pipelines},
    )


def test_queues_with_storage_use_the_file_storage_directory_and_lock_it_while_running(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    queue_dir = tmp_path / "queue"
    service = _service(_queued_config(queue_dir, down))
    rival = _service(_queued_config(queue_dir, down))
    refused: list[str] = []

    async def scenario() -> None:
        async with _running(service) as client:
            assert (await _post(client, _batch("w1", 5, points=2))).status_code == 200
            with pytest.raises(CollectorConfigError) as caught:
                await rival.serve()
            refused.append(str(caught.value))
            await service.pipelines["metrics"].flush()

    asyncio.run(scenario())

    assert refused[0].startswith("extensions.file_storage/q.directory: ") and "in use by another sidecar" in refused[0]
    # The backend was down for the whole run: each queue kept its batch on disk, in its own directory.
    assert sorted(p.name for p in queue_dir.iterdir()) == [".lock", "otlphttp%2Fgw", "prometheusremotewrite"]
    assert len(list((queue_dir / "otlphttp%2Fgw").glob("*.batch"))) == 1
    assert len(list((queue_dir / "prometheusremotewrite").glob("*.batch"))) >= 1
    counts = service.exporters["otlphttp/gw"].counts()
    assert (counts.sent, counts.failed, counts.enqueue_failed, counts.queue_capacity) == (0, 0, 0, 7)


def test_storage_naming_a_missing_directory_fails_at_start_naming_the_key(tmp_path: Path) -> None:
    service = _service(_queued_config(tmp_path / "absent", "http://127.0.0.1:9", create_directory=False))

    with pytest.raises(CollectorConfigError, match=r"^extensions\.file_storage/q\.directory: .*does not exist"):
        asyncio.run(service.serve())


def test_a_full_sending_queue_refuses_upstream_with_503() -> None:
    config = _config(
        {"metrics": {"receivers": ["otlp"], "exporters": ["otlphttp"]}},
        exporters={
            "otlphttp": {
                "endpoint": f"http://127.0.0.1:{free_port()}",
                "sending_queue": {"queue_size": 2, "num_consumers": 1},
                "retry_on_failure": {"max_elapsed_time": "0"},
            }
        },
    )
    service = _service(config, exporter_shutdown_timeout=0.2)
    statuses: list[int] = []

    async def scenario() -> None:
        async with _running(service) as client:
            for n in range(4):
                response = await _post(client, _batch("w1", n))
                statuses.append(response.status_code)
                if response.status_code == 503:
                    assert response.headers["retry-after"]
            counts.append(service.exporters["otlphttp"].counts())

    counts: list[ExporterCounts] = []
    asyncio.run(scenario())

    assert statuses == [200, 200, 503, 503]
    assert (counts[0].queue_size, counts[0].enqueue_failed) == (2, 0)  # refused upstream, never dropped here


def test_own_metrics_are_served_with_the_data_and_count_points() -> None:
    config = _config(
        {"metrics": {"receivers": ["otlp"], "exporters": ["prometheus"]}},
        exporters={"prometheus": {"endpoint": "127.0.0.1:0"}},
    )
    service = _service(config)
    sent = _batch("w1", 2, points=3)

    async def scenario() -> None:
        async with _running(service) as client:
            await _post(client, sent)

    asyncio.run(scenario())
    own = _samples(service, "prometheus", "otelcol_")
    points = float(count_points(sent))
    assert own['otelcol_receiver_accepted_metric_points_total{receiver="otlp",transport="http"}'] == points
    assert own['otelcol_exporter_sent_metric_points_total{exporter="prometheus"}'] == points
    series = _samples(service, "prometheus", "otel_monitoring_exporter_series")
    assert series['otel_monitoring_exporter_series{exporter="prometheus"}'] == points  # one series per point here


def test_own_metrics_are_left_out_at_level_none() -> None:
    document = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}}},
        "exporters": {"prometheus": {"endpoint": "127.0.0.1:0"}},
        "service": {
            "telemetry": {"metrics": {"level": "none"}},
            "pipelines": {"metrics": {"receivers": ["otlp"], "exporters": ["prometheus"]}},
        },
    }
    service = _service(CollectorConfig.model_validate(document))
    assert b"otelcol_" not in service.prometheus_exporters["prometheus"].render()


def test_debug_exporter_logs_one_line_per_batch_with_sampling(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.debug_exporter")
    exporter = DebugExporter(
        DebugExporterConfig(verbosity="normal", sampling_initial=2, sampling_thereafter=3),
        clock=lambda: 0.0,
        logger=logger,
    )
    with caplog.at_level(logging.INFO, logger="test.debug_exporter"):
        for _ in range(8):
            exporter.export(_batch("w1", 1, points=2))
    assert len(caplog.records) == 4  # batches 1, 2, then 5 and 8 (one in three after the first two)
    assert caplog.records[0].getMessage() == "debug: 1 resources, 1 metrics, 2 data points (requests)"
    assert exporter.counts().sent == 16


def _write(tmp_path: Path, document: dict[str, Any]) -> str:
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return str(path)


def test_cli_collector_validate_still_checks_without_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        {
            "receivers": {"otlp": None},
            "exporters": {"debug": None},
            "service": {"pipelines": {"metrics": {"receivers": ["otlp"], "exporters": ["debug"]}}},
        },
    )
    assert main(["collector", "validate", "--config", path]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: valid")


# --- nothing accepted is lost to a full exporter queue ------------------------------------------------------------


def test_concurrent_requests_past_a_tiny_queue_are_either_queued_or_refused_before_any_exporter() -> None:
    config = _config(
        {"metrics": {"receivers": ["otlp"], "exporters": ["debug", "otlphttp"]}},
        exporters={
            "debug": None,  # first: it would take a request the queue then refused
            "otlphttp": {
                "endpoint": f"http://127.0.0.1:{free_port()}",  # nothing listens: the queue only fills
                "sending_queue": {"queue_size": 2, "num_consumers": 1},
                "retry_on_failure": {"max_elapsed_time": "0"},
            },
        },
    )
    service = _service(config, exporter_shutdown_timeout=0.2)
    batches = [_batch("w1", n, points=n + 1) for n in range(6)]
    statuses: list[int] = []
    counts: dict[str, ExporterCounts] = {}

    async def scenario() -> None:
        async with _running(service) as client:
            responses = await asyncio.gather(*(_post(client, batch) for batch in batches))
            statuses.extend(response.status_code for response in responses)
            counts.update({eid: exporter.counts() for eid, exporter in service.exporters.items()})

    asyncio.run(scenario())

    accepted = [count_points(batch) for batch, status in zip(batches, statuses, strict=True) if status == 200]
    assert sorted(set(statuses)) == [200, 503]
    assert len(accepted) == counts["otlphttp"].queue_capacity == 2
    assert counts["otlphttp"].queue_size == len(accepted)
    assert counts["otlphttp"].enqueue_failed == 0  # nothing answered 200 was refused by the queue
    assert counts["debug"].sent == sum(accepted)  # what was refused reached no exporter: no duplicate on retry


def test_a_batch_an_exporter_refuses_is_kept_for_it_alone_and_sent_at_the_next_flush() -> None:
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics as _encode

    from otel_monitoring.sidecar.config import BatchConfig, OTLPHTTPExporterConfig
    from otel_monitoring.sidecar.otlp_exporter import OTLPHTTPExporter
    from otel_monitoring.sidecar.service import _MetricsPipeline
    from processors import Pipeline

    received: list[bytes] = []
    client = httpx.Client(
        transport=httpx.MockTransport(lambda request: received.append(request.content) or httpx.Response(200))
    )
    otlp_config = OTLPHTTPExporterConfig.model_validate(
        {
            "endpoint": "http://gateway:4318",
            "compression": "none",
            "sending_queue": {"queue_size": 1, "num_consumers": 1},
        }
    )
    otlp = OTLPHTTPExporter(otlp_config, client=client)  # not started yet: its one slot stays taken
    debug = DebugExporter(DebugExporterConfig())
    pipeline = _MetricsPipeline(
        "metrics",
        Pipeline([]),
        BatchConfig.model_validate({"send_batch_size": 1, "timeout": "1h"}),
        Pipeline([]),
        [("debug", debug), ("otlphttp", otlp)],
        [],
    )
    first, second = _batch("w1", 1, points=2), _batch("w2", 5, points=3)
    refused_meanwhile: list[str] = []

    async def scenario() -> None:
        pipeline.admit()
        pipeline.admit()  # both admitted while the queue had room: the second flush finds it full
        await pipeline.consume(first)
        await pipeline.consume(second)
        try:
            pipeline.admit()
        except ReceiverBusy as error:
            refused_meanwhile.append(str(error))
        otlp.start()
        assert await asyncio.to_thread(otlp.flush, 10.0)
        await pipeline.flush()  # the queue has room again: the kept batch goes
        assert await asyncio.to_thread(otlp.flush, 10.0)
        pipeline.admit()  # taking data again

    asyncio.run(scenario())
    otlp.shutdown(timeout=1.0)

    assert refused_meanwhile and "refused" in refused_meanwhile[0]
    assert received == [
        bytes(_encode(first).SerializeToString()),
        bytes(_encode(second).SerializeToString()),
    ]
    stats = otlp.stats()
    assert stats.sent == count_points(first) + count_points(second)
    assert stats.dropped == count_points(second)  # one refused offer (enqueue_failed), which the pipeline kept
    assert debug.counts().sent == count_points(first) + count_points(second)  # not sent twice to debug


def test_an_export_refused_without_batch_fails_the_request_so_the_sender_retries() -> None:
    config = _config(
        {"metrics": {"receivers": ["otlp"], "exporters": ["otlphttp"]}},
        exporters={
            "otlphttp": {
                "endpoint": f"http://127.0.0.1:{free_port()}",  # nothing listens: the send fails
                "sending_queue": {"enabled": False},  # sent in the pipeline's thread: False means not taken
                "retry_on_failure": {"enabled": False},
            }
        },
    )
    service = _service(config, exporter_shutdown_timeout=0.2)
    responses: list[httpx.Response] = []

    async def scenario() -> None:
        async with _running(service) as client:
            responses.append(await _post(client, _batch("w1", 1)))

    asyncio.run(scenario())

    assert responses[0].status_code == 503 and responses[0].headers["retry-after"]
    assert service.receivers["otlp"].stats.refused_points == 1


def test_requests_arriving_while_a_batch_is_exported_are_admitted() -> None:
    # The batch is exported in a worker thread while the event loop admits the next requests: a batch still being
    # exported must not look like one an exporter refused.
    config = _config(
        {"metrics": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["prometheus"]}},
        processors={"batch": None},
        exporters={"prometheus": {"endpoint": "127.0.0.1:0"}},
    )
    pipeline = _service(config).pipelines["metrics"]
    (_, exporter) = pipeline.exporters[0]
    exporting, finish = threading.Event(), threading.Event()
    export = exporter.export

    def slow_export(data: MetricsData, *, reserved: bool = False) -> bool:
        exporting.set()
        finish.wait(5)
        return export(data, reserved=reserved)

    exporter.export = slow_export  # type: ignore[method-assign]
    flush = threading.Thread(target=pipeline._export_after_batch, args=(_batch("w1", 5),))
    flush.start()
    try:
        assert exporting.wait(5)
        pipeline.admit()  # raises ReceiverBusy if the batch in flight looks refused
    finally:
        finish.set()
        flush.join()
    pipeline.admit()
