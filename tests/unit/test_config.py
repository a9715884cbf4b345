"""The seed's code API: process-wide settings, code overrides, and change listeners."""

from __future__ import annotations

import doctest
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from otel_monitoring import config, telemetry
from otel_monitoring.config import SettingsStore
from otel_monitoring.settings import Settings, SettingsError


def settings_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "otel_monitoring.settings" and r.levelno == logging.WARNING
    ]


def test_get_loads_lazily_from_the_environment_and_caches() -> None:
    environ = {"PROMETHEUS_RETENTION_DAYS": "30"}
    store = SettingsStore(environ=environ)
    environ["PROMETHEUS_RETENTION_DAYS"] = "40"  # read at first use, not at construction

    first = store.get()

    assert first.prometheus.retention_days == 40
    environ["PROMETHEUS_RETENTION_DAYS"] = "50"
    assert store.get() is first


def test_seed_calls_set_the_same_fields_as_the_environment() -> None:
    store = SettingsStore(environ={})

    store.set_metrics_retention(days=15)
    store.configure_exporter(push_gateway="http://pushgateway:9091", job_name="aiagency-core")
    store.configure_alerts(slack_webhook="https://hooks.slack.com/services/T/B/x", email="alerts@aiagency.com")

    settings = store.get()
    assert settings.prometheus.retention_days == 15
    assert settings.pushgateway.url == "http://pushgateway:9091"
    assert settings.pushgateway.job_name == "aiagency-core"
    assert settings.alerting.slack_webhook is not None
    assert settings.alerting.slack_webhook.get_secret_value() == "https://hooks.slack.com/services/T/B/x"
    assert settings.alerting.email == ["alerts@aiagency.com"]
    assert settings.source_of("pushgateway.url") == "code"


def test_code_wins_over_environment() -> None:
    store = SettingsStore(environ={"PROMETHEUS_RETENTION_DAYS": "30", "PROMETHEUS_PUSH_GATEWAY": "http://env:9091"})

    store.set_metrics_retention(days=7)

    assert store.get().prometheus.retention_days == 7
    assert store.get().pushgateway.url == "http://env:9091"


def test_none_arguments_leave_values_unchanged() -> None:
    store = SettingsStore(environ={"OTEL_MONITORING_PUSH_JOB_NAME": "from-env"})

    store.configure_exporter(interval_seconds=2.5)

    assert store.get().pushgateway.job_name == "from-env"
    assert store.get().pushgateway.interval_seconds == 2.5


def test_configure_alerts_accepts_a_list_of_addresses_and_keeps_no_reference_to_it() -> None:
    store = SettingsStore(environ={})
    addresses = ["a@example.com", "b@example.com"]

    store.configure_alerts(email=addresses)
    addresses.append("not an address")
    store.reload()

    assert store.get().alerting.email == ["a@example.com", "b@example.com"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.set_metrics_retention(days=0), "set_metrics_retention(days): must be an integer >= 1 (got 0)"),
        (
            lambda s: s.set_metrics_retention(days=True),
            "set_metrics_retention(days): must be an integer >= 1 (got True)",
        ),
        (
            lambda s: s.configure_exporter(push_gateway="pushgateway:9091"),
            "configure_exporter(push_gateway): must be an http(s) URL (got 'pushgateway:9091')",
        ),
        (
            lambda s: s.configure_exporter(job_name=""),
            "configure_exporter(job_name): must be a non-empty string (got '')",
        ),
        (
            lambda s: s.configure_exporter(interval_seconds=-1),
            "configure_exporter(interval_seconds): must be a number of seconds > 0 (got -1)",
        ),
        (
            lambda s: s.configure_alerts(email="alerts at aiagency.com"),
            "configure_alerts(email): must be a list of email addresses (got 'alerts at aiagency.com')",
        ),
        (
            lambda s: s.configure_alerts(slack_webhook="hooks.slack.com/services/SECRET"),
            "configure_alerts(slack_webhook): must be an http(s) URL (value not shown: secret)",
        ),
    ],
)
def test_bad_argument_raises_value_error_naming_the_parameter(
    call: Callable[[SettingsStore], None], message: str
) -> None:
    store = SettingsStore(environ={})

    with pytest.raises(ValueError) as excinfo:
        call(store)

    assert str(excinfo.value) == message
    assert isinstance(excinfo.value, SettingsError)


def test_bad_argument_records_nothing_from_the_same_call() -> None:
    store = SettingsStore(environ={})

    with pytest.raises(ValueError, match="interval_seconds"):
        store.configure_exporter(push_gateway="http://pushgateway:9091", interval_seconds=0)

    assert store.get().pushgateway.url is None
    store.reload()
    assert store.get().pushgateway.url is None


def test_code_overrides_survive_reload_which_rereads_the_environment() -> None:
    environ = {"GRAFANA_URL": "http://old:3000"}
    store = SettingsStore(environ=environ)
    store.set_metrics_retention(days=9)

    environ["GRAFANA_URL"] = "http://new:3000"
    environ["PROMETHEUS_RETENTION_DAYS"] = "30"
    reloaded = store.reload()

    assert reloaded.grafana.url == "http://new:3000"
    assert reloaded.prometheus.retention_days == 9


def test_reload_with_a_file_uses_it_from_then_on(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("pushgateway:\n  job_name: from-file\n", encoding="utf-8")
    store = SettingsStore(environ={})

    assert store.reload(path).pushgateway.job_name == "from-file"
    path.write_text("pushgateway:\n  job_name: edited\n", encoding="utf-8")
    assert store.reload().pushgateway.job_name == "edited"


def test_store_reads_the_config_file_given_at_construction(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("prometheus:\n  retention_days: 45\n", encoding="utf-8")

    assert SettingsStore(path, environ={}).get().prometheus.retention_days == 45


def test_bad_environment_value_warns_once_across_several_changes(caplog: pytest.LogCaptureFixture) -> None:
    store = SettingsStore(environ={"PROMETHEUS_RETENTION_DAYS": "abc"})

    store.configure_exporter(job_name="a")
    store.configure_exporter(job_name="b")
    store.set_metrics_retention(days=3)

    assert settings_warnings(caplog) == [
        "PROMETHEUS_RETENTION_DAYS: must be an integer >= 1 (got 'abc'); using the default 15"
    ]


def test_listener_is_called_after_every_change_with_the_new_settings() -> None:
    store = SettingsStore(environ={})
    seen: list[Settings] = []
    store.add_listener(seen.append)

    store.configure_exporter(push_gateway="http://pushgateway:9091")
    store.set_metrics_retention(days=3)
    store.reload()

    assert [s.pushgateway.url for s in seen] == ["http://pushgateway:9091"] * 3
    assert [s.prometheus.retention_days for s in seen] == [15, 3, 3]
    assert seen[-1] is store.get()


def test_call_without_values_changes_nothing_and_notifies_no_one() -> None:
    store = SettingsStore(environ={})
    seen: list[Settings] = []
    store.add_listener(seen.append)

    store.configure_exporter()
    store.configure_alerts()

    assert seen == []


def test_failing_listener_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    store = SettingsStore(environ={})
    seen: list[Settings] = []

    def broken(settings: Settings) -> None:
        raise RuntimeError("pusher exploded")

    store.add_listener(broken)
    store.add_listener(seen.append)

    store.set_metrics_retention(days=3)

    assert len(seen) == 1
    errors = [r for r in caplog.records if r.name == "otel_monitoring.config" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "settings listener" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert "pusher exploded" in str(errors[0].exc_info[1])


def test_removed_listener_is_not_called_again() -> None:
    store = SettingsStore(environ={})
    seen: list[Settings] = []
    remove = store.add_listener(seen.append)

    store.set_metrics_retention(days=3)
    remove()
    remove()  # a second removal is harmless
    store.set_metrics_retention(days=4)

    assert [s.prometheus.retention_days for s in seen] == [3]


def test_listener_may_change_settings_itself() -> None:
    store = SettingsStore(environ={})
    seen: list[int] = []

    def follow(settings: Settings) -> None:
        seen.append(settings.prometheus.retention_days)
        if settings.prometheus.retention_days == 3:
            store.set_metrics_retention(days=4)

    store.add_listener(follow)
    store.set_metrics_retention(days=3)

    assert store.get().prometheus.retention_days == 4
    assert seen[-1] == 4


def test_concurrent_changes_from_many_threads_are_all_recorded() -> None:
    store = SettingsStore(environ={})
    notified: list[Settings] = []
    store.add_listener(notified.append)
    start = threading.Barrier(8)

    def work(index: int) -> None:
        start.wait()
        for _ in range(20):
            if index % 2:
                store.configure_exporter(job_name=f"job-{index}")
            else:
                store.configure_alerts(email=f"t{index}@example.com")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    settings = store.get()
    assert settings.pushgateway.job_name in {f"job-{i}" for i in (1, 3, 5, 7)}
    assert settings.alerting.email[0] in {f"t{i}@example.com" for i in (0, 2, 4, 6)}
    assert len(notified) == 160
    # However the changes interleaved, the last notification carries the final state.
    assert notified[-1] is settings


def test_module_functions_act_on_the_process_wide_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # Swap in a fresh store (not os.environ) so the test does not leak state into others.
    monkeypatch.setattr(config, "_store", SettingsStore(environ={}))
    monkeypatch.setattr(telemetry, "_telemetry", None)
    seen: list[Settings] = []
    config.add_settings_listener(seen.append)

    try:
        config.set_metrics_retention(days=15)
        config.configure_exporter(push_gateway="http://127.0.0.1:9", job_name="aiagency-core")
        config.configure_alerts(slack_webhook="https://hooks.slack.com/services/T/B/x", email="alerts@aiagency.com")

        settings = config.get_settings()
        assert settings.pushgateway.job_name == "aiagency-core"
        assert settings.alerting.email == ["alerts@aiagency.com"]
        assert len(seen) == 3
        assert config.reload_settings().pushgateway.url == "http://127.0.0.1:9"
        assert len(seen) == 4
        # Configuring a gateway starts the pipeline, so a batch job that only records still pushes.
        built = telemetry._telemetry
        assert built is not None and built.pushgateway_pusher is not None and built.pushgateway_pusher.running
    finally:
        telemetry.shutdown_telemetry()


def test_docstring_examples_run() -> None:
    result = doctest.testmod(config)

    assert result.attempted > 0
    assert result.failed == 0
