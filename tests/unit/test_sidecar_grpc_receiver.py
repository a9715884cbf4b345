"""The sidecar's OTLP/gRPC receiver on 127.0.0.1, fed by the official OpenTelemetry gRPC exporter and by raw calls."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult, MetricsData
from opentelemetry.sdk.resources import Resource

from otel_monitoring.sidecar.config import BearerTokenAuthExtensionConfig, OTLPGRPCServerConfig
from otel_monitoring.sidecar.grpc_receiver import METRICS_EXPORT_METHOD, OTLPGRPCReceiver
from otel_monitoring.sidecar.receiver import ReceiverBusy
from otel_monitoring.sidecar.service import count_points

TOKEN = "grpc-receiver-token-0123"


def sdk_metrics(worker: int = 1) -> MetricsData:
    """Real SDK metrics: a counter, a histogram and an up-down counter, with attributes."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource({"service.name": "shop", "process.pid": 4000 + worker})
    )
    meter = provider.get_meter("shop.checkout", "1.2")
    orders = meter.create_counter("orders", unit="1", description="Orders placed")
    latency = meter.create_histogram("checkout.duration", unit="s")
    active = meter.create_up_down_counter("carts.active")
    for index in range(7):
        orders.add(index + worker, {"country": "BR" if index % 2 else "PT", "plan": "pro"})
        latency.record(0.05 * index, {"route": "/pay"})
    active.add(5 * worker)
    active.add(-2)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return data


def points_by_series(data: MetricsData) -> dict[tuple[str, tuple[tuple[str, Any], ...]], Any]:
    """Every point's value (sum/count/buckets for histograms), keyed by metric name and attributes."""
    values: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, tuple(sorted((point.attributes or {}).items())))
                    if hasattr(point, "bucket_counts"):
                        values[key] = (point.sum, point.count, tuple(point.bucket_counts), tuple(point.explicit_bounds))
                    else:
                        values[key] = point.value
    return values


class Recorder:
    """The consumer: keeps what it gets; raises the queued refusals first."""

    def __init__(self) -> None:
        self.batches: list[MetricsData] = []
        self.refusals: list[BaseException] = []

    async def __call__(self, data: MetricsData) -> None:
        if self.refusals:
            raise self.refusals.pop(0)
        self.batches.append(data)


def serve(
    test: Callable[[OTLPGRPCReceiver, str], Awaitable[None]],
    consumer: Callable[[MetricsData], Awaitable[None]],
    **config: Any,
) -> OTLPGRPCReceiver:
    """Run ``test(receiver, target)`` with a receiver listening on a free 127.0.0.1 port; stop it afterwards."""
    options = dict(config)
    token = options.pop("bearer_token", None)
    receiver = OTLPGRPCReceiver(
        OTLPGRPCServerConfig.model_validate({"endpoint": "127.0.0.1:0", **options}), consumer, bearer_token=token
    )

    async def main() -> None:
        port = await receiver.start()
        try:
            await test(receiver, f"127.0.0.1:{port}")
        finally:
            await receiver.stop(grace=1.0)

    asyncio.run(main())
    return receiver


async def raw_call(target: str, body: bytes, **kwargs: Any) -> tuple[grpc.StatusCode, bytes, dict[str, Any], str]:
    """One Export call with raw bytes: (code, answer, trailing metadata, details)."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(METRICS_EXPORT_METHOD)(body, timeout=10, **kwargs)
        try:
            answer = await call
        except grpc.aio.AioRpcError as error:
            return error.code(), b"", pairs(error.trailing_metadata()), error.details() or ""
        return await call.code(), answer, pairs(await call.trailing_metadata()), ""


def pairs(metadata: Any) -> dict[str, Any]:
    # grpc.aio's Metadata iterates (key, value) pairs, which dict() would take for keys.
    return {key: value for key, value in metadata or ()}


def sdk_exporter(target: str, **kwargs: Any) -> OTLPMetricExporter:
    return OTLPMetricExporter(endpoint=target, insecure=True, timeout=10, **kwargs)


@pytest.mark.parametrize("compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip])
def test_official_grpc_exporter_delivers_the_values_the_sdk_recorded(compression: grpc.Compression) -> None:
    sent = sdk_metrics()
    recorder = Recorder()
    results: list[MetricExportResult] = []

    async def test(receiver: OTLPGRPCReceiver, target: str) -> None:
        exporter = sdk_exporter(target, compression=compression)
        results.append(await asyncio.to_thread(exporter.export, sent))
        exporter.shutdown()

    receiver = serve(test, recorder)
    assert results == [MetricExportResult.SUCCESS]
    assert len(recorder.batches) == 1
    assert points_by_series(recorder.batches[0]) == points_by_series(sent)
    received = recorder.batches[0].resource_metrics[0]
    assert received.resource.attributes["process.pid"] == sent.resource_metrics[0].resource.attributes["process.pid"]
    assert received.scope_metrics[0].scope.name == "shop.checkout"
    assert receiver.stats.accepted_points == receiver.stats.received_points == count_points(sent)
    assert receiver.stats.responses == {0: 1}


def test_malformed_message_is_invalid_argument_and_the_receiver_keeps_serving() -> None:
    recorder = Recorder()
    answers: list[grpc.StatusCode] = []
    # Field 1 (resource_metrics) announces 5 bytes and carries 2: a truncated message.
    truncated = b"\x0a\x05ab"

    async def test(receiver: OTLPGRPCReceiver, target: str) -> None:
        code, _, _, details = await raw_call(target, truncated)
        answers.append(code)
        assert "not a protobuf ExportMetricsServiceRequest" in details
        exporter = sdk_exporter(target)
        assert await asyncio.to_thread(exporter.export, sdk_metrics()) == MetricExportResult.SUCCESS
        exporter.shutdown()

    receiver = serve(test, recorder)
    assert answers == [grpc.StatusCode.INVALID_ARGUMENT]
    assert len(recorder.batches) == 1
    assert receiver.stats.responses == {3: 1, 0: 1}


def test_busy_pipeline_answers_unavailable_with_retry_info_in_both_trailers() -> None:
    recorder = Recorder()
    recorder.refusals.append(ReceiverBusy(2.25, message="memory above the soft limit"))
    body = bytes(ExportMetricsServiceRequest.FromString(encoded_sdk_request()).SerializeToString())
    seen: list[tuple[grpc.StatusCode, dict[str, Any], str]] = []

    async def test(receiver: OTLPGRPCReceiver, target: str) -> None:
        code, _, trailers, details = await raw_call(target, body)
        seen.append((code, trailers, details))

    receiver = serve(test, recorder)
    [(code, trailers, details)] = seen
    assert code == grpc.StatusCode.UNAVAILABLE
    assert details == "memory above the soft limit"
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert info.retry_delay.seconds + info.retry_delay.nanos / 1e9 == 2.25
    assert error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]) == info
    assert recorder.batches == []
    assert receiver.stats.refused_points == receiver.stats.received_points > 0
    assert receiver.stats.accepted_points == 0


def test_official_exporter_retries_after_unavailable_and_delivers_once() -> None:
    recorder = Recorder()
    recorder.refusals.append(ReceiverBusy(0.01))
    sent = sdk_metrics()
    results: list[MetricExportResult] = []

    async def test(receiver: OTLPGRPCReceiver, target: str) -> None:
        exporter = sdk_exporter(target)
        results.append(await asyncio.to_thread(exporter.export, sent))
        exporter.shutdown()

    receiver = serve(test, recorder)
    assert results == [MetricExportResult.SUCCESS]
    assert [points_by_series(batch) for batch in recorder.batches] == [points_by_series(sent)]
    assert receiver.stats.responses == {14: 1, 0: 1}
    assert receiver.stats.refused_points == receiver.stats.accepted_points == count_points(sent)


def test_permanent_refusal_is_invalid_argument_without_retry_info() -> None:
    recorder = Recorder()
    recorder.refusals.append(ReceiverBusy(1.0, permanent=True, message="data refused for good"))
    seen: list[tuple[grpc.StatusCode, dict[str, Any]]] = []

    async def test(receiver: OTLPGRPCReceiver, target: str) -> None:
        code, _, trailers, _ = await raw_call(target, encoded_sdk_request())
        seen.append((code, trailers))

    serve(test, recorder)
    [(code, trailers)] = seen
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "google.rpc.retryinfo-bin" not in trailers


def test_pipeline_crash_is_internal_and_the_next_request_is_served() -> None:
    recorder = Recorder()
    recorder.refusals.append(RuntimeError("a processor broke"))
    codes: list[grpc.StatusCode] = []

    async def test(receiver: OTLPGRPCReceiver, target: str) -> None:
        for _ in range(2):
            codes.append((await raw_call(target, encoded_sdk_request()))[0])

    receiver = serve(test, recorder)
    assert codes == [grpc.StatusCode.INTERNAL, grpc.StatusCode.OK]
    assert len(recorder.batches) == 1
    assert receiver.stats.refused_points == receiver.stats.accepted_points


def test_points_the_model_cannot_hold_are_reported_in_partial_success() -> None:
    request = ExportMetricsServiceRequest.FromString(encoded_sdk_request())
    summary = request.resource_metrics[0].scope_metrics[0].metrics.add(name="legacy_latency")
    summary.summary.data_points.add(count=3, sum=1.5)
    summary.summary.data_points.add(count=1, sum=0.5)
    recorder = Recorder()
    answers: list[tuple[grpc.StatusCode, bytes]] = []

    async def test(receiver: OTLPGRPCReceiver, target: str) -> None:
        code, answer, _, _ = await raw_call(target, request.SerializeToString())
        answers.append((code, answer))

    receiver = serve(test, recorder)
    [(code, answer)] = answers
    assert code == grpc.StatusCode.OK
    partial = ExportMetricsServiceResponse.FromString(answer).partial_success
    assert partial.rejected_data_points == len(summary.summary.data_points)
    assert "summary" in partial.error_message.lower()
    assert receiver.stats.rejected_points == len(summary.summary.data_points)
    assert receiver.stats.accepted_points == count_points(recorder.batches[0])


def test_bearer_token_is_required_from_the_call_metadata() -> None:
    recorder = Recorder()
    token = BearerTokenAuthExtensionConfig(token=TOKEN)
    outcomes: dict[str, Any] = {}

    async def test(receiver: OTLPGRPCReceiver, target: str) -> None:
        body = encoded_sdk_request()
        outcomes["none"] = (await raw_call(target, body))[0]
        outcomes["wrong"] = (await raw_call(target, body, metadata=(("authorization", f"Bearer {TOKEN}x"),)))[0]
        outcomes["scheme"] = (await raw_call(target, body, metadata=(("authorization", f"Basic {TOKEN}"),)))[0]
        exporter = sdk_exporter(target, headers={"authorization": f"bearer {TOKEN}"})
        outcomes["sdk"] = await asyncio.to_thread(exporter.export, sdk_metrics())
        exporter.shutdown()

    receiver = serve(test, recorder, auth={"authenticator": "bearertokenauth"}, bearer_token=token)
    assert outcomes == {
        "none": grpc.StatusCode.UNAUTHENTICATED,
        "wrong": grpc.StatusCode.UNAUTHENTICATED,
        "scheme": grpc.StatusCode.UNAUTHENTICATED,
        "sdk": MetricExportResult.SUCCESS,
    }
    assert len(recorder.batches) == 1
    assert receiver.stats.responses == {16: 3, 0: 1}


def test_auth_without_the_extension_is_refused_at_construction() -> None:
    config = OTLPGRPCServerConfig.model_validate({"auth": {"authenticator": "bearertokenauth"}})
    with pytest.raises(ValueError, match="must be given to the receiver as bearer_token"):
        OTLPGRPCReceiver(config, Recorder())


@pytest.mark.parametrize("compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip])
def test_message_over_max_recv_msg_size_after_decompression_is_resource_exhausted(
    compression: grpc.Compression,
) -> None:
    limit = 1024 * 1024
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="padded")
    # Compresses to a few kilobytes: a gzip bomb as far as a size check before decompression could tell.
    metric.description = "x" * (limit + 1)
    metric.gauge.data_points.add(as_int=1)
    body = request.SerializeToString()
    assert len(gzip.compress(body)) < limit // 100
    recorder = Recorder()
    codes: list[grpc.StatusCode] = []

    async def test(receiver: OTLPGRPCReceiver, target: str) -> None:
        codes.append((await raw_call(target, body, compression=compression))[0])
        codes.append((await raw_call(target, encoded_sdk_request(), compression=compression))[0])

    serve(test, recorder, max_recv_msg_size_mib=1)
    assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OK]
    assert len(recorder.batches) == 1


def test_second_receiver_on_the_same_endpoint_fails_to_start_instead_of_sharing_the_port() -> None:
    # grpc would set SO_REUSEPORT and let two sidecars split the traffic silently; the receiver turns that off.
    errors: list[BaseException] = []

    async def test(receiver: OTLPGRPCReceiver, target: str) -> None:
        second = OTLPGRPCReceiver(OTLPGRPCServerConfig(endpoint=target), Recorder())
        try:
            await second.start()
        except RuntimeError as error:
            errors.append(error)
        finally:
            await second.stop(grace=0)

    serve(test, Recorder())
    assert len(errors) == 1


def encoded_sdk_request() -> bytes:
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    return bytes(encode_metrics(sdk_metrics()).SerializeToString())
