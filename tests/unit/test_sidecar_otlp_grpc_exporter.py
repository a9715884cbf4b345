"""The sidecar's ``otlp`` (gRPC) exporter against the sidecar's own OTLP/gRPC receiver and a scripted gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_monitoring.sidecar.config import BearerTokenAuthExtensionConfig, OTLPExporterConfig, OTLPGRPCServerConfig
from otel_monitoring.sidecar.grpc_receiver import METRICS_SERVICE, OTLPGRPCReceiver, retry_info_metadata
from otel_monitoring.sidecar.otlp_grpc_exporter import OTLPGRPCExporter, OTLPGRPCSender, encode_metrics_request
from otel_monitoring.sidecar.receiver import ReceiverBusy
from otel_monitoring.sidecar.sending_queue import PermanentError, RetryableError
from otel_monitoring.sidecar.service import count_points
from tests.support import free_port
from tests.unit.test_sidecar_grpc_receiver import Recorder, points_by_series, sdk_metrics

TOKEN = "otlp-exporter-token-4567"


class EventLoopThread:
    """An asyncio loop in a thread, for servers the synchronous exporter calls from the test's thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-grpc-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=20)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=20)
        self.loop.close()


@contextlib.contextmanager
def receiver_running(recorder: Recorder, **config: Any) -> Iterator[tuple[OTLPGRPCReceiver, str]]:
    token = config.pop("bearer_token", None)
    server_config = OTLPGRPCServerConfig.model_validate({"endpoint": "127.0.0.1:0", **config})
    receiver = OTLPGRPCReceiver(server_config, recorder, bearer_token=token)
    loop = EventLoopThread()
    try:
        port = loop.run(receiver.start())
        yield receiver, f"127.0.0.1:{port}"
    finally:
        loop.run(receiver.stop(grace=1.0))
        loop.close()


def exporter_config(target: str, **extra: Any) -> OTLPExporterConfig:
    return OTLPExporterConfig.model_validate({"endpoint": target, "tls": {"insecure": True}, **extra})


class Sleeps:
    """The retry wait: records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def test_exported_values_arrive_equal_at_the_grpc_receiver() -> None:
    recorder = Recorder()
    batches = [sdk_metrics(worker=1), sdk_metrics(worker=2)]
    with receiver_running(recorder) as (receiver, target):
        exporter = OTLPGRPCExporter(exporter_config(target, sending_queue={"num_consumers": 1}))
        exporter.start()
        assert all(exporter.export(batch) for batch in batches)
        assert exporter.flush(timeout=10)
        exporter.shutdown(timeout=1)
    assert [points_by_series(batch) for batch in recorder.batches] == [points_by_series(batch) for batch in batches]
    sent = sum(count_points(batch) for batch in batches)
    assert exporter.stats().sent == receiver.stats.accepted_points == sent
    assert exporter.stats().failed == exporter.stats().rejected == 0


def test_unavailable_with_retry_info_is_retried_no_sooner_than_the_servers_delay() -> None:
    recorder = Recorder()
    recorder.refusals += [ReceiverBusy(7.5), ReceiverBusy(7.5)]
    sleeps = Sleeps()
    data = sdk_metrics()
    with receiver_running(recorder) as (receiver, target):
        config = exporter_config(target, sending_queue={"enabled": False}, retry_on_failure={"initial_interval": "1s"})
        exporter = OTLPGRPCExporter(config, sleep=sleeps, jitter=lambda: 0.5)
        assert exporter.export(data)
        exporter.shutdown(timeout=1)
    assert sleeps.delays == [7.5, 7.5]
    assert [points_by_series(batch) for batch in recorder.batches] == [points_by_series(data)]
    assert exporter.stats().retries == 2
    assert receiver.stats.responses == {14: 2, 0: 1}


def test_permanent_refusal_is_not_retried_and_counts_as_failed() -> None:
    recorder = Recorder()
    recorder.refusals.append(ReceiverBusy(1.0, permanent=True))
    sleeps = Sleeps()
    data = sdk_metrics()
    with receiver_running(recorder) as (_, target):
        exporter = OTLPGRPCExporter(exporter_config(target, sending_queue={"enabled": False}), sleep=sleeps)
        assert not exporter.export(data)
        exporter.shutdown(timeout=1)
    assert sleeps.delays == []
    assert exporter.stats().failed == count_points(data)
    assert recorder.batches == []


def test_message_over_the_receivers_limit_fails_without_retry() -> None:
    # RESOURCE_EXHAUSTED without RetryInfo: the same message would be refused again.
    template = sdk_metrics().resource_metrics[0].scope_metrics[0].metrics[0]
    metric = Metric("padded", "x" * (1024 * 1024 + 1), "1", template.data)
    data = MetricsData([ResourceMetrics(Resource({}), [ScopeMetrics(InstrumentationScope("big"), [metric], "")], "")])
    sleeps = Sleeps()
    with receiver_running(Recorder(), max_recv_msg_size_mib=1) as (_, target):
        exporter = OTLPGRPCExporter(exporter_config(target, sending_queue={"enabled": False}), sleep=sleeps)
        assert not exporter.export(data)
        exporter.shutdown(timeout=1)
    assert sleeps.delays == []
    assert exporter.stats().failed == count_points(data)


def test_points_the_server_rejects_are_counted_from_partial_success() -> None:
    valid = HistogramDataPoint({"route": "/a"}, 1, 2, 3, 6.0, [1, 1, 1], [1.0, 2.0], 1.0, 3.0)
    # Three bounds need four buckets: the OTLP data model calls this point invalid, and the receiver rejects it.
    invalid = HistogramDataPoint({"route": "/b"}, 1, 2, 3, 6.0, [1, 2], [1.0, 2.0, 3.0], 1.0, 3.0)
    histogram = Histogram([valid, invalid], AggregationTemporality.CUMULATIVE)
    scope = ScopeMetrics(InstrumentationScope("app"), [Metric("latency", "", "s", histogram)], "")
    data = MetricsData([ResourceMetrics(Resource({"service.name": "shop"}), [scope], "")])
    recorder = Recorder()
    with receiver_running(recorder) as (receiver, target):
        exporter = OTLPGRPCExporter(exporter_config(target, sending_queue={"enabled": False}))
        assert exporter.export(data)
        exporter.shutdown(timeout=1)
    assert exporter.stats().rejected == receiver.stats.rejected_points == 1
    assert count_points(recorder.batches[0]) == count_points(data) - 1


def test_bearer_token_from_the_extension_is_accepted_by_a_receiver_that_requires_it() -> None:
    token = BearerTokenAuthExtensionConfig(token=TOKEN)
    recorder = Recorder()
    auth = {"authenticator": "bearertokenauth"}
    with receiver_running(recorder, auth=auth, bearer_token=token) as (receiver, target):
        config = exporter_config(target, sending_queue={"enabled": False}, auth=auth)
        with_token = OTLPGRPCExporter(config, auth_header=lambda: f"Bearer {TOKEN}")
        without = OTLPGRPCExporter(exporter_config(target, sending_queue={"enabled": False}))
        assert with_token.export(sdk_metrics())
        assert not without.export(sdk_metrics())
        with_token.shutdown(timeout=1)
        without.shutdown(timeout=1)
    assert len(recorder.batches) == 1
    assert receiver.stats.responses == {0: 1, 16: 1}


def test_auth_without_the_extension_is_refused_at_construction() -> None:
    config = exporter_config("127.0.0.1:4317", auth={"authenticator": "bearertokenauth"})
    with pytest.raises(ValueError, match="must be given to the exporter as auth_header"):
        OTLPGRPCSender(config)


class ScriptedServer:
    """A gRPC server whose Export answers with the next scripted status, recording each call's metadata."""

    def __init__(self) -> None:
        self.script: list[tuple[grpc.StatusCode, tuple[tuple[str, bytes], ...]]] = []
        self.metadata: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []

    async def export(self, request: bytes, context: Any) -> bytes:
        self.bodies.append(request)
        self.metadata.append({key: value for key, value in context.invocation_metadata()})
        code, trailers = self.script.pop(0)
        if code != grpc.StatusCode.OK:
            await context.abort(code, f"scripted {code.name}", trailers)
        return b""

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        loop = EventLoopThread()
        handler = grpc.method_handlers_generic_handler(
            METRICS_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(self.export)}
        )

        async def start() -> tuple[Any, int]:
            server = grpc.aio.server()
            server.add_generic_rpc_handlers((handler,))
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            return server, port

        server, port = loop.run(start())
        try:
            yield f"127.0.0.1:{port}"
        finally:
            loop.run(server.stop(0))
            loop.close()


RETRYABLE = ["CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS"]
PERMANENT = ["INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED", "INTERNAL", "UNIMPLEMENTED", "NOT_FOUND"]


@pytest.mark.parametrize(
    ("code_name", "retry_after", "retryable"),
    [(name, None, True) for name in RETRYABLE]
    + [(name, None, False) for name in PERMANENT]
    + [("RESOURCE_EXHAUSTED", None, False), ("RESOURCE_EXHAUSTED", 3.0, True), ("UNAVAILABLE", 0.25, True)],
)
def test_sender_classifies_status_codes_as_the_otlp_spec_does(
    code_name: str, retry_after: float | None, retryable: bool
) -> None:
    code = grpc.StatusCode[code_name]
    trailers = retry_info_metadata(code, "scripted", retry_after) if retry_after is not None else ()
    server = ScriptedServer()
    server.script.append((code, trailers))
    with server.running() as target:
        sender = OTLPGRPCSender(exporter_config(target))
        with pytest.raises(RetryableError if retryable else PermanentError) as raised:
            sender.send(encode_metrics_request(sdk_metrics()))
        sender.close()
    assert code_name in str(raised.value)
    if isinstance(raised.value, RetryableError):
        assert raised.value.retry_after == retry_after


def test_headers_and_token_travel_as_metadata_and_the_body_is_the_encoded_request() -> None:
    server = ScriptedServer()
    server.script.append((grpc.StatusCode.OK, ()))
    data = sdk_metrics()
    headers = {"X-Tenant": "shop-eu", "Authorization": "Basic configured-header"}
    with server.running() as target:
        config = exporter_config(target, headers=headers, auth={"authenticator": "bearertokenauth"}, compression="gzip")
        # The extension's token wins over a configured Authorization header.
        sender = OTLPGRPCSender(config, auth_header=lambda: f"Token {TOKEN}")
        sender.send(encode_metrics_request(data))
        sender.close()
    [metadata] = server.metadata
    assert metadata["x-tenant"] == "shop-eu"
    assert metadata["authorization"] == f"Token {TOKEN}"
    assert ExportMetricsServiceRequest.FromString(server.bodies[0]) == ExportMetricsServiceRequest.FromString(
        encode_metrics_request(data)
    )


def test_unreachable_endpoint_is_retryable() -> None:
    sender = OTLPGRPCSender(exporter_config(f"127.0.0.1:{free_port()}", timeout="2s"))
    with pytest.raises(RetryableError, match=r"UNAVAILABLE|DEADLINE_EXCEEDED"):
        sender.send(encode_metrics_request(sdk_metrics()))
    sender.close()


@pytest.mark.parametrize(
    ("endpoint", "tls", "target", "secure"),
    [
        ("gateway:4317", None, "gateway:4317", True),
        ("gateway:4317", {"insecure": True}, "gateway:4317", False),
        ("http://gateway:4317", None, "gateway:4317", False),
        ("https://gateway:4317", {"insecure": True}, "gateway:4317", True),
    ],
)
def test_tls_is_chosen_as_the_collector_chooses_it(
    endpoint: str, tls: dict[str, Any] | None, target: str, secure: bool
) -> None:
    sender = OTLPGRPCSender(OTLPExporterConfig.model_validate({"endpoint": endpoint, "tls": tls}))
    assert (sender.target, sender.secure) == (target, secure)
    sender.close()


def test_insecure_skip_verify_is_refused_with_the_key_named() -> None:
    config = OTLPExporterConfig.model_validate({"endpoint": "gateway:4317", "tls": {"insecure_skip_verify": True}})
    with pytest.raises(ValueError, match=r"exporters\.otlp/gw\.tls\.insecure_skip_verify"):
        OTLPGRPCSender(config, name="otlp/gw")
