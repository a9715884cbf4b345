"""The sanitize processor: label values lose personal data, customer ids become pseudonyms, series stay valid."""

from __future__ import annotations

import logging
import string
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Buckets,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
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
from pydantic import ValidationError

from otel_monitoring._instruments import MetricsRegistry
from processors import sanitize
from processors.component import ProcessorContext
from processors.detectors import DETECTION_ORDER
from processors.sanitize import FACTORY, PSEUDONYM_PREFIX, TRUNCATION_MARKER, SanitizeConfig, SanitizeProcessor

SECOND = 1_000_000_000
START = 1_700_000_000 * SECOND
KEY = "0123456789abcdef-test-key"
CUMULATIVE = AggregationTemporality.CUMULATIVE
DELTA = AggregationTemporality.DELTA
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> int:
        return self.now


# --- Building batches ------------------------------------------------------------------------------------------


def counter(points: Sequence[tuple[Mapping[str, Any], float]], *, name: str = "requests", start: int = START) -> Metric:
    data = [NumberDataPoint(dict(attributes), start, start + SECOND, value) for attributes, value in points]
    return Metric(name, "", "1", Sum(data, CUMULATIVE, True))


def batch(*metrics: Metric, resource: Mapping[str, Any] | None = None) -> MetricsData:
    scope = ScopeMetrics(InstrumentationScope("test"), list(metrics), "")
    return MetricsData([ResourceMetrics(Resource(dict(resource or {"service.name": "api"})), [scope], "")])


def metrics_of(data: MetricsData) -> list[Metric]:
    return [metric for rm in data.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics]


def points_of(data: MetricsData, name: str | None = None) -> list[Any]:
    return [
        point for metric in metrics_of(data) if name is None or metric.name == name for point in metric.data.data_points
    ]


def make(
    registry: MetricsRegistry | None = None, clock: FakeClock | None = None, key: str | None = KEY, **config: Any
) -> SanitizeProcessor:
    context = ProcessorContext(
        registry=registry or MetricsRegistry(),
        clock=clock or FakeClock(),
        secrets={} if key is None else {"pseudonym_key": key},
        component_id="sanitize",
    )
    return FACTORY.create_from(config, context)  # type: ignore[return-value]


def count(registry: MetricsRegistry, name: str, **labels: str) -> float:
    family = registry.get(name)
    assert family is not None, name
    total = 0.0
    for series in family.series():
        if all(series.attributes.get(key) == value for key, value in labels.items()):
            total += series.cell.get()  # type: ignore[union-attr]
    return total


# --- Config ---------------------------------------------------------------------------------------------------


def test_default_config_is_valid_and_builds_a_processor() -> None:
    config = SanitizeConfig()
    assert config.ip_mode == "mask"
    assert "customer_id" in config.pseudonymize_keys
    processor = make()
    data = batch()
    assert processor.process(data) is data
    processor.shutdown()
    processor.shutdown()  # twice is allowed


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({"pseudonym_length": 4}, "pseudonym_length", "must be between 8 and 64"),
        ({"pseudonym_length": 65}, "pseudonym_length", "must be between 8 and 64"),
        ({"max_value_length": 3}, "max_value_length", "must be between 16 and 65536"),
        ({"cache_size": 0}, "cache_size", "must be at least 1"),
        ({"expiry_seconds": 0}, "expiry_seconds", "must be greater than 0"),
        ({"hash_key_name": " "}, "hash_key_name", "must name an entry of the secrets"),
        ({"fail_closed": True}, "fail_closed", "needs at least one rule in allow"),
        ({"deny": [""]}, "deny", "attribute-key globs must not be empty"),
        ({"allow": {"http.*": [""]}}, "allow", "must not be empty"),
        ({"ip_mode": "hash"}, "ip_mode", "'mask' or 'truncate'"),
        ({"detectors": ["emial"]}, "detectors.0", "'email'"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
    ],
)
def test_a_bad_config_names_the_field_and_what_is_valid(raw: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SanitizeConfig.model_validate(raw)
    error = caught.value.errors()[0]
    assert ".".join(str(part) for part in error["loc"]) == field
    assert message in error["msg"]


def test_fail_closed_with_an_allow_rule_is_valid() -> None:
    assert SanitizeConfig(fail_closed=True, allow={"http.*": ["http.route"]}).fail_closed


def test_a_short_pseudonym_key_is_refused_without_showing_it() -> None:
    with pytest.raises(ValueError, match=r"secret 'pseudonym_key'\) must be at least 16 bytes \(got 5\)") as caught:
        make(key="hunte")
    assert "hunte" not in str(caught.value)


# --- Personal data never leaves --------------------------------------------------------------------------------

PERSONAL = {
    "email": ["ana.silva@example.com", "joao+promo@empresa.com.br"],
    "phone": ["+55 11 91234-5678", "(21) 98765-4321", "11987654321", "+1 (415) 555-2671"],
    "ipv4": ["203.0.113.42", "10.1.2.3"],
    "ipv6": ["2001:db8:85a3::8a2e:370:7334", "fe80::1ff:fe23:4567:890a"],
    "card": ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005"],
    "cpf": ["529.982.247-25", "11144477735"],
    "cnpj": ["11.222.333/0001-81", "11444777000161"],
    "jwt": ["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQ"],
    "token": ["sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t", "ghp_" + "a1B2" * 9, "AKIAIOSFODNN7EXAMPLE", "Bearer abc123def456"],
    "url_query": ["/reset?token=s3cr3t-value&uid=991"],
}  # fmt: skip
SECRET_PART = {"token": lambda v: v.split(" ")[-1][8:], "url_query": lambda v: v.split("?", 1)[1]}
SAFE_WORDS = st.text("acdfhijklmnoqtuvwz", min_size=1, max_size=8)
ORDINARY_VALUES = [
    "GET",
    "/users/{id}",
    "200",
    "gpt-4o",
    "us-east-1",
    "1.45.1",
    "250ms",
    "api.example.com",
    "2024-11-25",
]


@st.composite
def personal_labels(draw: st.DrawFn) -> tuple[str, str, str]:
    kind = draw(st.sampled_from(sorted(PERSONAL)))
    value = draw(st.sampled_from(PERSONAL[kind]))
    before = draw(st.lists(SAFE_WORDS, max_size=2))
    after = draw(st.lists(SAFE_WORDS, max_size=2))
    text = " ".join([*before, value, *after])
    secret = SECRET_PART.get(kind, lambda v: v)(value)
    return kind, secret, text


@FAST
@given(
    st.lists(personal_labels(), min_size=1, max_size=6),
    st.dictionaries(st.sampled_from(["http.request.method", "region", "model"]), st.sampled_from(ORDINARY_VALUES)),
)
def test_personal_data_in_label_values_never_reaches_the_output(
    labels: list[tuple[str, str, str]], ordinary: dict[str, str]
) -> None:
    registry = MetricsRegistry()
    processor = make(registry)
    points = [({"label": text, **ordinary}, 1.0 + index) for index, (_, _, text) in enumerate(labels)]
    data = batch(counter(points), Metric("depth", "", "", Gauge([NumberDataPoint({"where": labels[0][2]}, 0, 1, 2.0)])))
    for _ in range(2):  # the second batch comes from the caches
        output = processor.process(data)
        rendered = repr([point.attributes for point in points_of(output)])
        for _, secret, _ in labels:
            assert secret not in rendered
        for point in points_of(output, "requests"):
            assert all(point.attributes[key] == value for key, value in ordinary.items())
    for kind in {kind for kind, _, _ in labels}:
        assert count(registry, "otel_monitoring_sanitize_redactions_total", detector=kind) >= 2


@FAST
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["method", "route", "status", "model", "region", "version"]),
            st.one_of(st.sampled_from(ORDINARY_VALUES), st.integers(0, 9_999_999), st.floats(0, 10), st.booleans()),
            min_size=1,
        ),
        min_size=1,
        max_size=8,
        unique_by=lambda attributes: frozenset(attributes.items()),
    )
)
def test_a_batch_without_personal_data_comes_out_as_the_same_object(attribute_sets: list[dict[str, Any]]) -> None:
    processor = make()
    data = batch(counter([(attributes, 1.0) for attributes in attribute_sets]))
    assert processor.process(data) is data
    assert processor.process(data) is data


def test_equal_values_from_other_string_objects_are_still_unchanged() -> None:
    processor = make()
    first = batch(counter([({"route": "/users/{id}", "method": "GET"}, 1.0)]))
    assert processor.process(first) is first
    # Applications build values at run time: equal strings, other objects, must hit the caches the same way.
    rebuilt = {
        "route": "".join(["/users/", "{id}"]),
        "method": "".join(["G", "ET"]),
        "region": "".join(["us-", "east-1"]),
    }
    second = batch(counter([(rebuilt, 2.0)]))
    assert processor.process(second) is second


def test_only_changed_parts_are_rebuilt() -> None:
    processor = make()
    clean = counter([({"route": "/users/{id}"}, 1.0), ({"route": "/health"}, 2.0)], name="clean")
    dirty = counter([({"route": "/users/ana@example.com"}, 1.0), ({"route": "/health"}, 3.0)], name="dirty")
    output = processor.process(batch(clean, dirty))
    out_clean, out_dirty = metrics_of(output)
    assert out_clean is clean
    assert out_dirty is not dirty
    assert dirty.data.data_points[1] in out_dirty.data.data_points  # the untouched point is the same object
    assert [point.attributes for point in out_dirty.data.data_points] == [
        {"route": "/health"},
        {"route": "/users/<email>"},
    ]


def test_values_of_other_types_are_checked_too() -> None:
    processor = make()
    attributes = {
        "cpf": 52998224725,
        "phone": 5511912345678,  # E.164 storage form of a Brazilian mobile, as an int
        "port": 8080,
        "ok": True,
        "ratio": 0.5,
        "hosts": ("10.0.0.1", "db"),
        "none": "",
    }
    point = points_of(processor.process(batch(counter([(attributes, 1.0)]))))[0]
    assert point.attributes == {
        "cpf": "<cpf>",
        "phone": "<phone>",
        "port": 8080,
        "ok": True,
        "ratio": 0.5,
        "hosts": ("<ipv4>", "db"),
        "none": "",
    }


def test_ip_addresses_can_keep_their_network() -> None:
    processor = make(ip_mode="truncate")
    point = points_of(processor.process(batch(counter([({"client.address": "203.0.113.42"}, 1.0)]))))[0]
    assert point.attributes == {"client.address": "203.0.113.0/24"}


def test_only_the_configured_detectors_run() -> None:
    processor = make(detectors=["email"])
    point = points_of(processor.process(batch(counter([({"a": "x@y.io", "b": "10.0.0.1"}, 1.0)]))))[0]
    assert point.attributes == {"a": "<email>", "b": "10.0.0.1"}


def test_resource_attributes_and_exemplars_are_sanitized() -> None:
    processor = make()
    exemplar = Exemplar({"user.email": "ana@example.com", "customer_id": "c-1"}, 1.0, START)
    point = NumberDataPoint({"route": "/"}, START, START + 1, 1.0, [exemplar])
    data = batch(
        Metric("requests", "", "1", Sum([point], CUMULATIVE, True)),
        resource={"service.name": "api", "process.command_args": ("app", "--token=abc123")},
    )
    output = processor.process(data)
    resource = output.resource_metrics[0].resource
    assert resource.attributes["process.command_args"] == ("app", "--token=<secret>")
    assert resource.attributes["service.name"] == "api"
    cleaned = points_of(output)[0].exemplars[0].filtered_attributes
    assert cleaned["user.email"] == "<email>"
    assert cleaned["customer_id"].startswith(PSEUDONYM_PREFIX)


# --- Pseudonyms -------------------------------------------------------------------------------------------------


def pseudonym(processor: SanitizeProcessor, value: Any, key: str = "customer_id") -> Any:
    return points_of(processor.process(batch(counter([({key: value}, 1.0)]))))[0].attributes[key]


def test_customer_ids_become_keyed_pseudonyms_that_are_stable() -> None:
    first, second = make(), make()
    value = pseudonym(first, "cust-42")
    assert value == pseudonym(first, "cust-42") == pseudonym(second, "cust-42")
    assert value.startswith(PSEUDONYM_PREFIX)
    assert len(value) == len(PSEUDONYM_PREFIX) + 16
    assert pseudonym(make(key="another-key-of-16-bytes"), "cust-42") != value
    assert pseudonym(first, "cust-43") != value


@FAST
@given(st.text(string.ascii_letters + string.digits + "-_.@", min_size=6, max_size=40))
def test_pseudonyms_never_contain_the_identifier(identifier: str) -> None:
    value = pseudonym(make(), identifier)
    assert identifier not in value
    assert value.startswith(PSEUDONYM_PREFIX)


@pytest.mark.parametrize(
    "key",
    [
        "customer_id", "customer.id", "Customer-Id", "user.id", "enduser.id", "tenant_id",
        "userId", "customerId", "tenantID", "clientId", "AccountId",
    ],
)  # fmt: skip
def test_identifier_keys_match_in_their_dotted_dashed_and_camel_case_forms(key: str) -> None:
    assert pseudonym(make(), "someone@example.com", key).startswith(PSEUDONYM_PREFIX)


def test_pseudonymized_values_are_not_also_reported_by_detectors() -> None:
    registry = MetricsRegistry()
    processor = make(registry)
    assert pseudonym(processor, "ana@example.com", "user_id").startswith(PSEUDONYM_PREFIX)
    assert count(registry, "otel_monitoring_sanitize_redactions_total") == 0
    assert count(registry, "otel_monitoring_sanitize_pseudonymized_total") == 1


def test_integer_ids_and_configured_keys_and_lengths() -> None:
    processor = make(pseudonymize_keys=["org_*"], pseudonym_length=8)
    value = pseudonym(processor, 1234, "org_id")
    assert len(value) == len(PSEUDONYM_PREFIX) + 8
    assert value == pseudonym(processor, "1234", "org_id")  # an id is the same as int or string
    assert pseudonym(processor, "cust-1", "customer_id") == "cust-1"  # no longer in the list


def test_a_pseudonym_is_not_hashed_again() -> None:
    processor = make()
    once = pseudonym(processor, "cust-7")
    assert pseudonym(processor, once) == once  # sanitize in-process, then again in the sidecar
    assert pseudonym(make(), once) == once  # another processor with the same key (the sidecar)


@pytest.mark.parametrize("forged", ["u_0123456789abcdef", "u_ffffffffffffffff", "u_0000000000000000"])
def test_a_value_that_only_looks_like_a_pseudonym_is_hashed(forged: str) -> None:
    processor = make()
    value = pseudonym(processor, forged)
    assert value != forged
    assert value.startswith(PSEUDONYM_PREFIX)
    assert pseudonym(make(key="another-key-of-16-bytes"), value) != value  # another key's pseudonym is a value


def test_identifier_keys_of_the_resource_become_pseudonyms() -> None:
    registry = MetricsRegistry()
    processor = make(registry)
    data = batch(
        counter([({"tenant_id": "acme-corp-42"}, 1.0)]),
        resource={"service.name": "api", "tenant.id": "acme-corp-42", "enduser.id": "ana.silva"},
    )
    output = processor.process(data)
    attributes = output.resource_metrics[0].resource.attributes
    assert attributes["service.name"] == "api"
    assert attributes["tenant.id"] == points_of(output)[0].attributes["tenant_id"]  # the same pseudonym
    assert str(attributes["tenant.id"]).startswith(PSEUDONYM_PREFIX)
    assert str(attributes["enduser.id"]).startswith(PSEUDONYM_PREFIX)
    assert "ana.silva" not in str(attributes)
    assert count(registry, "otel_monitoring_sanitize_pseudonymized_total") == 3


@pytest.mark.parametrize("key", ["note", "user_id"])
def test_a_lone_surrogate_never_breaks_hashing_or_encoding(key: str) -> None:
    processor = make()
    output = processor.process(
        batch(counter([({key: "\ud800abc ana@example.com"}, 1.0)]), resource={"service.name": "\udfffapi"})
    )
    value = points_of(output)[0].attributes[key]
    value.encode("utf-8")  # what every exporter does; raises on a surrogate
    output.resource_metrics[0].resource.attributes["service.name"].encode("utf-8")  # type: ignore[union-attr]
    assert "ana@example.com" not in value
    if key == "note":
        assert value == "\ufffdabc <email>"


def test_without_a_key_a_random_per_process_key_is_used_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sanitize, "_FALLBACK_KEY", sanitize._FallbackKey())
    random_key = b"R" * 32
    context = ProcessorContext(registry=MetricsRegistry(), component_id="sanitize")
    with caplog.at_level(logging.WARNING, logger="processors.sanitize"):
        first = SanitizeProcessor(SanitizeConfig(), context, token_bytes=lambda n: random_key[:n])
        second = SanitizeProcessor(SanitizeConfig(), context, token_bytes=lambda n: b"other" * 7)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "pseudonyms will not be stable across restarts" in message
    assert "OTEL_MONITORING_PSEUDONYM_KEY" in message
    assert "RRRR" not in message
    assert pseudonym(first, "cust-1") == pseudonym(second, "cust-1")  # one key for the whole process


# --- Colliding series merge -------------------------------------------------------------------------------------


def test_two_emails_that_become_one_marker_merge_into_one_point_with_the_sum() -> None:
    processor = make()
    data = batch(counter([({"route": "/u/ana@example.com"}, 3.0), ({"route": "/u/bia@example.com"}, 4.0)]))
    points = points_of(processor.process(data))
    assert [(point.attributes, point.value) for point in points] == [({"route": "/u/<email>"}, 7.0)]


def test_merged_cumulative_counters_stay_monotonic_across_batches() -> None:
    clock = FakeClock()
    processor = make(clock=clock)
    ana, bia, carla = ({"route": f"/u/{name}@example.com"} for name in ("ana", "bia", "carla"))
    batches = [
        [(ana, 5.0, START)],
        [(ana, 7.0, START), (bia, 2.0, START)],  # now they collide
        [(bia, 3.0, START)],  # ana is gone
        [(ana, 1.0, START + 50 * SECOND), (bia, 4.0, START)],  # ana restarted from zero
        [(ana, 2.0, START + 50 * SECOND), (bia, 4.0, START), (carla, 10.0, START)],
    ]
    seen = []
    for points in batches:
        clock.now += 10 * SECOND
        metric = Metric(
            "requests", "", "1", Sum([NumberDataPoint(a, s, clock.now, v) for a, v, s in points], CUMULATIVE, True)
        )
        output = points_of(processor.process(batch(metric)))
        assert len(output) == 1
        assert output[0].attributes == {"route": "/u/<email>"}
        seen.append(output[0].value)
    assert seen == sorted(seen)
    assert seen[-1] == 7 + 4 + 2 + 10  # ana 7 then 2 after her restart, bia 4, carla 10


@FAST
@given(
    st.lists(st.dictionaries(st.integers(0, 2), st.tuples(st.integers(0, 5), st.booleans())), min_size=1, max_size=8)
)
def test_merged_output_is_monotonic_and_equals_the_true_total(steps: list[dict[int, tuple[int, bool]]]) -> None:
    """Three users' counters collide in one series; each batch reports some of them, which grow or restart."""
    clock = FakeClock()
    processor = make(clock=clock)
    values = [0, 0, 0]
    starts = [START, START, START]
    true_total = 0
    previous = 0.0
    for step in steps:
        clock.now += SECOND
        for who, (increase, restart) in step.items():
            if restart:
                starts[who], values[who] = clock.now, 0
            values[who] += increase
            true_total += increase
        points = [
            NumberDataPoint({"user": f"user{who}@example.com", "route": "/"}, starts[who], clock.now, values[who])
            for who in sorted(step)
        ]
        output = points_of(processor.process(batch(Metric("c", "", "1", Sum(points, CUMULATIVE, True)))))
        assert len(output) == (1 if step else 0)
        if output:
            assert output[0].value >= previous
            previous = output[0].value
    if any(steps):
        assert previous == true_total


def test_a_series_merged_once_keeps_its_merged_total_when_the_others_are_gone() -> None:
    processor = make()
    literal = {"route": "/u/<email>"}  # a value that already looks like the marker
    email = {"route": "/u/ana@example.com"}
    totals = [
        points_of(processor.process(batch(counter(points))))
        for points in ([(literal, 10.0)], [(literal, 11.0), (email, 5.0)], [(literal, 12.0)])
    ]
    assert [[point.value for point in points] for points in totals] == [[10.0], [16.0], [17.0]]


def test_colliding_gauges_histograms_and_deltas_merge_into_one_point() -> None:
    processor = make()
    gauge = Metric(
        "queue",
        "",
        "",
        Gauge([NumberDataPoint({"q": "a@x.io"}, 0, 5, 1.0), NumberDataPoint({"q": "b@x.io"}, 0, 9, 2.0)]),
    )
    delta = Metric(
        "jobs",
        "",
        "",
        Sum([NumberDataPoint({"q": "a@x.io"}, 0, 5, 1.0), NumberDataPoint({"q": "b@x.io"}, 0, 5, 2.0)], DELTA, True),
    )
    histogram = Metric(
        "latency",
        "",
        "s",
        Histogram(
            [
                HistogramDataPoint({"q": "a@x.io"}, START, START + 1, 2, 0.3, [1, 1, 0], [0.1, 1.0], 0.1, 0.2),
                HistogramDataPoint({"q": "b@x.io"}, START, START + 1, 3, 5.0, [0, 1, 2], [0.1, 1.0], 0.5, 2.0),
            ],
            CUMULATIVE,
        ),
    )
    output = processor.process(batch(gauge, delta, histogram))
    queue, jobs, latency = (points_of(output, name) for name in ("queue", "jobs", "latency"))
    assert [(p.attributes, p.value) for p in queue] == [({"q": "<email>"}, 2.0)]  # the latest value
    assert [(p.attributes, p.value) for p in jobs] == [({"q": "<email>"}, 3.0)]
    assert len(latency) == 1
    assert (latency[0].count, latency[0].sum, list(latency[0].bucket_counts)) == (5, 5.3, [1, 2, 2])


def test_colliding_exponential_histograms_are_never_emitted_twice() -> None:
    empty = Buckets(0, [])
    points = [
        ExponentialHistogramDataPoint({"q": f"{name}@x.io"}, 0, 1, 1, 1.0, 0, 0, empty, empty, 0, 1.0, 1.0)
        for name in ("a", "b")
    ]
    metric = Metric("sizes", "", "", ExponentialHistogram(points, CUMULATIVE))
    output = points_of(make().process(batch(metric)))
    assert [point.attributes for point in output] == [{"q": "<email>"}]


def test_pseudonyms_alone_do_not_merge_or_rebuild_series_values() -> None:
    processor = make()
    data = batch(counter([({"customer_id": "c1"}, 3.0), ({"customer_id": "c2"}, 4.0)], start=START + 7))
    points = points_of(processor.process(data))
    assert [point.value for point in points] == [3.0, 4.0]
    assert all(point.start_time_unix_nano == START + 7 for point in points)
    assert len({point.attributes["customer_id"] for point in points}) == 2


def test_series_of_two_resources_are_never_merged_together() -> None:
    processor = make()
    metric = counter([({"route": "/u/a@x.io"}, 1.0), ({"route": "/u/b@x.io"}, 2.0)])
    one = batch(metric, resource={"service.instance.id": "worker-1"})
    two = batch(metric, resource={"service.instance.id": "worker-2"})
    output = processor.process(MetricsData([*one.resource_metrics, *two.resource_metrics]))
    assert [point.value for point in points_of(output)] == [3.0, 3.0]


# --- Deny, allow, fail-closed, length ---------------------------------------------------------------------------


def test_denied_keys_are_dropped_everywhere_and_counted() -> None:
    registry = MetricsRegistry()
    processor = make(registry, deny=["http.request.header.*", "session"])
    attributes = {"http.request.header.cookie": "a=b", "session": "xyz", "route": "/"}
    point = points_of(processor.process(batch(counter([(attributes, 1.0)]))))[0]
    assert point.attributes == {"route": "/"}
    assert count(registry, "otel_monitoring_sanitize_dropped_attributes_total", reason="deny") == 2


def test_allow_rules_keep_only_their_keys_on_matching_metrics() -> None:
    registry = MetricsRegistry()
    processor = make(registry, allow={"http.*": ["http.route", "http.request.method"], "http.server.*": ["status"]})
    attributes = {"http.route": "/", "http.request.method": "GET", "status": "200", "user_agent": "curl"}
    output = processor.process(
        batch(counter([(attributes, 1.0)], name="http.server.requests"), counter([(attributes, 1.0)], name="jobs"))
    )
    assert points_of(output, "http.server.requests")[0].attributes == {
        "http.route": "/",
        "http.request.method": "GET",
        "status": "200",
    }
    assert points_of(output, "jobs")[0].attributes == attributes  # no rule matches, and not fail-closed
    assert count(registry, "otel_monitoring_sanitize_dropped_attributes_total", reason="not_allowed") == 1


def test_fail_closed_strips_every_attribute_of_metrics_no_rule_allows() -> None:
    processor = make(fail_closed=True, allow={"http.*": ["http.route"]})
    output = processor.process(
        batch(
            counter([({"http.route": "/", "x": "1"}, 1.0)], name="http.requests"),
            counter([({"kind": "a"}, 2.0), ({"kind": "b"}, 3.0)], name="jobs"),
        )
    )
    assert [p.attributes for p in points_of(output, "http.requests")] == [{"http.route": "/"}]
    assert [(p.attributes, p.value) for p in points_of(output, "jobs")] == [({}, 5.0)]


def test_long_values_are_cut_and_marked_after_detection() -> None:
    registry = MetricsRegistry()
    processor = make(registry, max_value_length=32)
    long_value = "/search/ana@example.com/" + "segment/" * 20
    point = points_of(processor.process(batch(counter([({"path": long_value}, 1.0)]))))[0]
    value = point.attributes["path"]
    assert len(value) <= 32
    assert value.startswith("/search/<email>/")
    assert value.endswith(TRUNCATION_MARKER)
    assert count(registry, "otel_monitoring_sanitize_truncated_total") == 1


@pytest.mark.parametrize(
    "value",
    ["a" * 65_535 + "@", "a@" * 32_768, "a:" * 32_768, "token=" * 10_922, "a/" * 32_767 + "?", "+1 " * 21_845],
    ids=["local_part", "at_signs", "colons", "credential_keys", "slashes", "plus_digits"],
)
def test_a_64_kib_pathological_value_is_processed_well_under_a_second(value: str) -> None:
    processor = make(max_value_length=65_536)
    started = time.perf_counter()
    result = points_of(processor.process(batch(counter([({"v": value}, 1.0)]))))[0].attributes["v"]
    assert time.perf_counter() - started < 0.25
    # Detectors look at the first 4,096 characters only; the rest is cut, and the cut is marked.
    assert len(result) <= 4096 + len(TRUNCATION_MARKER)
    assert result.endswith(TRUNCATION_MARKER)


# --- Own metrics and caches -------------------------------------------------------------------------------------


def remembered(processor: SanitizeProcessor) -> int:
    """Merge state held by the processor: outputs that went through a merger, and the mergers' series."""
    merged = sum(len(outputs) for outputs in processor._merged_outputs.values())
    return merged + sum(merger.series_count() for merger in processor._mergers.values())


def test_merge_state_stays_bounded_when_values_that_lose_information_keep_changing() -> None:
    clock = FakeClock()
    processor = make(clock=clock, expiry_seconds=60)
    sizes = []
    for cycle in range(40):
        clock.now += 10 * SECOND
        # Every value is reported once and never again (an order number next to an email); each loses its email.
        points = [({"msg": f"order {cycle * 100 + i} for ana@example.com"}, 1.0) for i in range(100)]
        output = processor.process(batch(counter(points)))
        assert len(points_of(output)) == 100
        sizes.append(remembered(processor))
    # 60 s of 10 s cycles: about 6-8 cycles of 100 values (an output and an input each) are remembered.
    assert max(sizes[10:]) <= 3 * 8 * 100  # without expiry: 2 * 100 more every cycle, 8,000 at the end
    clock.now += 120 * SECOND
    processor.process(batch())
    assert remembered(processor) == 0
    assert not processor._mergers


def test_own_metrics_count_each_detector_per_processed_point_with_no_user_data() -> None:
    registry = MetricsRegistry()
    processor = make(registry)
    data = batch(counter([({"a": "x@y.io 10.0.0.1", "customer_id": "c1"}, 1.0), ({"a": "z@y.io"}, 1.0)]))
    processor.process(data)
    processor.process(data)
    assert count(registry, "otel_monitoring_sanitize_redactions_total", detector="email") == 4
    assert count(registry, "otel_monitoring_sanitize_redactions_total", detector="ipv4") == 2
    assert count(registry, "otel_monitoring_sanitize_redactions_total", detector="phone") == 0
    assert count(registry, "otel_monitoring_sanitize_pseudonymized_total") == 2
    for name in ("otel_monitoring_sanitize_redactions_total", "otel_monitoring_sanitize_pseudonymized_total"):
        family = registry.get(name)
        assert family is not None
        labels = {value for series in family.series() for value in series.label_values}
        assert labels <= {"sanitize", *DETECTION_ORDER}


def test_results_stay_correct_when_the_caches_overflow() -> None:
    processor = make(cache_size=3)
    points = [({"route": f"/u/user{i}@example.com", "n": str(i)}, float(i)) for i in range(20)]
    for _ in range(2):
        output = points_of(processor.process(batch(counter(points))))
        assert sorted(point.value for point in output) == [float(i) for i in range(20)]
        assert all(point.attributes["route"] == "/u/<email>" for point in output)
