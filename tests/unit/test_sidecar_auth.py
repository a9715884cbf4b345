"""The ``bearertokenauth`` token: one loader for the receivers, the prometheus exporter and exporters' headers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from otel_monitoring.settings import Settings
from otel_monitoring.sidecar._auth import load_bearer_token
from otel_monitoring.sidecar.config import (
    BearerTokenAuthExtensionConfig,
    CollectorConfig,
    CollectorConfigError,
    OTLPGRPCServerConfig,
    OTLPHTTPServerConfig,
    PrometheusExporterConfig,
)
from otel_monitoring.sidecar.grpc_receiver import OTLPGRPCReceiver
from otel_monitoring.sidecar.prometheus_exporter import PrometheusExporter
from otel_monitoring.sidecar.receiver import OTLPHTTPReceiver
from otel_monitoring.sidecar.service import CollectorService

AUTH = {"authenticator": "bearertokenauth/pods"}


async def _consume(data: Any) -> None:
    pass


def _empty_file_extension(tmp_path: Path, content: str = "") -> BearerTokenAuthExtensionConfig:
    path = tmp_path / "token"
    path.write_text(content, encoding="utf-8")
    return BearerTokenAuthExtensionConfig(filename=str(path))


BUILDERS: dict[str, Callable[[BearerTokenAuthExtensionConfig], object]] = {
    "http receiver": lambda token: OTLPHTTPReceiver(
        OTLPHTTPServerConfig.model_validate({"auth": AUTH}), _consume, bearer_token=token
    ),
    "grpc receiver": lambda token: OTLPGRPCReceiver(
        OTLPGRPCServerConfig.model_validate({"auth": AUTH}), _consume, bearer_token=token
    ),
    "prometheus exporter": lambda token: PrometheusExporter(
        PrometheusExporterConfig.model_validate({"auth": AUTH}), bearer_token=token
    ),
}


@pytest.mark.parametrize("component", sorted(BUILDERS))
@pytest.mark.parametrize("content", ["", " \n"])
def test_an_empty_token_file_is_refused_naming_the_extension(tmp_path: Path, component: str, content: str) -> None:
    token = _empty_file_extension(tmp_path, content)
    with pytest.raises(ValueError, match=r"extensions\.bearertokenauth/pods: the token file .*token is empty"):
        BUILDERS[component](token)


def test_an_empty_token_file_for_an_exporter_stops_the_service_naming_the_extension(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("\n", encoding="utf-8")
    config = CollectorConfig.model_validate(
        {
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}}},
            "exporters": {"otlphttp": {"endpoint": "http://127.0.0.1:9", "auth": AUTH}},
            "extensions": {"bearertokenauth/pods": {"filename": str(token_file)}},
            "service": {
                "extensions": ["bearertokenauth/pods"],
                "pipelines": {"metrics": {"receivers": ["otlp"], "exporters": ["otlphttp"]}},
            },
        }
    )
    settings = Settings.model_validate({"processing": {"pseudonym_key": "unit-test-pseudonym-key-0123456789"}})
    with pytest.raises(CollectorConfigError) as raised:
        CollectorService(config, settings=settings)
    assert raised.value.key == "extensions.bearertokenauth/pods.filename"
    assert "is empty" in str(raised.value)


def test_the_token_is_read_once_and_stripped(tmp_path: Path) -> None:
    reads: list[str] = []

    def read_text(path: str) -> str:
        reads.append(path)
        return "  s3cret-token\n"

    token = BearerTokenAuthExtensionConfig(filename="/run/secrets/token")
    assert load_bearer_token(token, read_text, name="bearertokenauth") == b"s3cret-token"
    assert reads == ["/run/secrets/token"]
    inline = BearerTokenAuthExtensionConfig(token="inline-token")
    assert load_bearer_token(inline, read_text) == b"inline-token"
    assert reads == ["/run/secrets/token"]  # an inline token reads no file
