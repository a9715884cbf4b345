"""The sidecar's fast paths (issue 5) give exactly what the slow paths give.

- ``label_value`` writes scalars itself: it must match the ``json.dumps`` rendering it replaced;
- the prometheus exporter caches label tuples per ``AttributeSet.token``: fed AttributeSets or plain dicts it
  must render the same bytes, also when its bounded caches overflow;
- sanitize caches its result per token and returns AttributeSets: same output as for plain dicts, and never
  another set's result;
- the OTLP decoder hands every point of a series the same AttributeSet, and different sets different ones.
"""

from __future__ import annotations

import decimal
import enum
import json
import math
import random
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
from google.protobuf import json_format  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
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

from otel_monitoring._instruments import MetricsRegistry
from otel_monitoring.sidecar import prometheus_exporter
from otel_monitoring.sidecar.config import PrometheusExporterConfig
from otel_monitoring.sidecar.otlp import OTLPMetricsDecoder
from otel_monitoring.sidecar.prometheus_exporter import PrometheusExporter, label_value
from processors._merge import AttributeSet
from processors.component import ProcessorContext
from processors.sanitize import SanitizeConfig, SanitizeProcessor

CUMULATIVE = AggregationTemporality.CUMULATIVE
DELTA = AggregationTemporality.DELTA
SECOND = 1_000_000_000
START = 1_700_000_000 * SECOND
KEY = "0123456789abcdef-fast-paths-key"


def typed(attributes: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Attributes compared with their value types: 1, 1.0 and True are equal as dict values, but not as labels."""
    return [(key, type(value).__name__, repr(value)) for key, value in attributes.items()]


# --- label_value against the json.dumps rendering it replaced ---------------------------------------------------


def json_label_value(value: Any) -> str:
    """The rule before the fast path (commit e50a8c2 replaced it): strings as they are, anything else as JSON,
    with str() for what JSON cannot write. The SDK's Prometheus reader writes non-string values the same way."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


class Status(enum.IntEnum):
    OK = 200
    NOT_FOUND = 404


class Permission(enum.IntFlag):
    READ = 1
    WRITE = 2


class Celsius(float):
    pass


class Count(int):
    pass


class Route(str):
    pass


NEGATIVE_NAN = struct.unpack("<d", struct.pack("<Q", 0xFFF8_0000_0000_0000))[0]
FLOATS = [
    0.0,
    -0.0,
    1.0,
    -1.5,
    0.1 + 0.2,
    1e300,
    -1e300,
    1.7976931348623157e308,
    5e-324,
    2.2250738585072014e-308,
    1e-7,
    123456.789,
    1e15,
    1e16,
    1e22,
    2.0**53 + 2,
    math.pi,
    math.nan,
    NEGATIVE_NAN,
    math.inf,
    -math.inf,
]
INTS = [0, 1, -1, 200, -(2**31), 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**100, -(10**100), 10**4299, -(10**4299)]
OTHERS = [
    True,
    False,
    Status.OK,
    Permission.READ | Permission.WRITE,
    Celsius(21.5),
    Celsius(math.nan),
    Count(7),
    "",
    "plain",
    'quote " and \\ and\nnewline',
    "ünïcødé ✓",
    Route("/users"),
    b"",
    b"\x00\xffraw",
    None,
    [],
    [1, "b", 2.5, True, None],
    (1, "b"),
    ("nested", (1, [2, 3])),
    [math.nan, math.inf, -0.0],
    {"a": 1, "b": [True]},
    decimal.Decimal("1.10"),
    object,
]


@pytest.mark.parametrize("value", FLOATS + INTS + OTHERS, ids=repr)
def test_label_value_matches_the_json_rendering(value: Any) -> None:
    assert label_value(value) == json_label_value(value)


@settings(max_examples=500, deadline=None)
@given(st.integers())
def test_label_value_of_any_int_matches_the_json_rendering(value: int) -> None:
    rendered = label_value(value)
    assert rendered == json_label_value(value)
    assert type(rendered) is str


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=-(10**4299), max_value=10**4299).filter(lambda v: abs(v) > 2**64))
def test_label_value_of_big_ints_matches_the_json_rendering(value: int) -> None:
    assert label_value(value) == json_label_value(value)


@settings(max_examples=1000, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True))
def test_label_value_of_any_float_matches_the_json_rendering(value: float) -> None:
    rendered = label_value(value)
    assert rendered == json_label_value(value)
    assert type(rendered) is str


@settings(max_examples=200, deadline=None)
@given(st.floats(width=32) | st.floats(width=16))
def test_label_value_of_narrow_floats_matches_the_json_rendering(value: float) -> None:
    assert label_value(value) == json_label_value(value)


def test_label_value_refuses_ints_past_the_digit_limit_as_json_did() -> None:
    # Python refuses to write an int of more than 4,300 digits as text; both renderings raise the same way.
    huge = 10**5000
    with pytest.raises(ValueError, match="integer string conversion") as before:
        json_label_value(huge)
    with pytest.raises(ValueError) as now:
        label_value(huge)
    assert type(now.value) is type(before.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6) | st.binary(max_size=4),
    lambda children: st.lists(children, max_size=4) | st.tuples(children, children),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_label_value_of_any_attribute_value_matches_the_json_rendering(value: Any) -> None:
    assert label_value(value) == json_label_value(value)


# --- The exporter: AttributeSets and plain dicts render the same bytes ------------------------------------------

VALUES: list[Any] = [
    "/a",
    "/b",
    "",
    'q"uote\\back\nline',
    200,
    404,
    -1,
    10**20,
    True,
    False,
    1,
    1.0,
    0.5,
    -0.0,
    1e300,
    math.nan,
    math.inf,
    ("x", 2),
    b"\x00raw",
    None,
    Status.OK,
]
# "http.route" and "http_route" become the same label name: the later key wins, in either path.
KEYS = ["http.route", "http_route", "status", "ok", "ratio", "tags", "raw"]
BOUNDS = [0.1, 1.0]
# (name in the plan, most points per batch, monotonic)
METRICS = [("requests", 8, True), ("jobs", 8, True), ("active", 8, False), ("temp", 8, False), ("duration", 5, True)]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


Plan = dict[str, list[tuple[int, int, float]]]  # metric -> [(series, start time, value)]


class Scenario:
    """Export batches for two workers with series that come, go, restart and expire, each batch built twice:
    with a fresh plain dict per point, and with one AttributeSet per series shared across batches, as the
    decoder gives them (replaced by an equal new set now and then, as after the decoder's cache is emptied)."""

    def __init__(self, seed: int, universe: int = 60) -> None:
        self.rng = random.Random(seed)
        self.contents: list[dict[str, Any]] = []
        for _ in range(universe):
            keys = self.rng.sample(KEYS, self.rng.randint(0, 3))
            self.contents.append({key: self.rng.choice(VALUES) for key in keys})
        self.sets = [AttributeSet(content) for content in self.contents]
        self.totals: dict[tuple[int, str, int], tuple[int, float]] = {}  # (worker, metric, series) -> start, value
        self.shift = 0

    def steps(self, count: int, clock: Clock) -> Iterator[tuple[MetricsData, MetricsData]]:
        rng = self.rng
        for _ in range(count):
            clock.now += rng.choice([1.0, 5.0, 30.0]) if rng.random() > 0.05 else 400.0  # 400 s: everything expires
            self.shift = (self.shift + rng.randint(0, 3)) % len(self.contents)  # the live window drifts: churn
            for _ in range(rng.randint(0, 3)):
                index = rng.randrange(len(self.sets))
                self.sets[index] = AttributeSet(self.contents[index])
            worker = rng.choice([1, 2])
            window = [(self.shift + i) % len(self.contents) for i in range(15)]
            plan: Plan = {}
            for name, most, monotonic in METRICS:
                plan[name] = [
                    (s, *self._next(worker, name, s, monotonic)) for s in rng.sample(window, rng.randint(0, most))
                ]
            yield (
                self._batch(worker, plan, lambda series: dict(self.contents[series])),
                self._batch(worker, plan, self.sets.__getitem__),
            )

    def _next(self, worker: int, name: str, series: int, monotonic: bool) -> tuple[int, float]:
        start, value = self.totals.get((worker, name, series), (1, 0.0))
        if self.rng.random() < 0.05:
            start, value = start + 1, float(self.rng.randint(0, 3))  # the worker restarted
        else:
            value += self.rng.randint(0, 5) if monotonic else self.rng.randint(-3, 3)
        self.totals[(worker, name, series)] = (start, value)
        return start, value

    @staticmethod
    def _batch(worker: int, plan: Plan, attributes: Callable[[int], Mapping[str, Any]]) -> MetricsData:
        def numbers(name: str) -> list[NumberDataPoint]:
            return [NumberDataPoint(attributes(s), start, start + 1, value) for s, start, value in plan[name]]

        histogram_points = []
        for series, start, value in plan["duration"]:
            count = int(value)
            buckets = [count // 3, count // 3, count - 2 * (count // 3)]
            histogram_points.append(
                HistogramDataPoint(attributes(series), start, start + 1, count, value / 2, buckets, BOUNDS, 0.0, 9.0)
            )
        metrics = [
            Metric("http.requests", "Requests", "{request}", Sum(numbers("requests"), CUMULATIVE, True)),
            Metric("jobs", "Jobs", "1", Sum(numbers("jobs"), DELTA, True)),
            Metric("http.active", "In flight", "{request}", Sum(numbers("active"), CUMULATIVE, False)),
            Metric("temperature", "Temperature", "Cel", Gauge(numbers("temp"))),
            Metric("http.duration", "Duration", "s", Histogram(histogram_points, CUMULATIVE)),
        ]
        resource = Resource({"service.name": "shop", "service.instance.id": f"w-{worker}", "process.pid": worker})
        scope = ScopeMetrics(InstrumentationScope("app", "1.0"), metrics, "")
        return MetricsData([ResourceMetrics(resource, [scope], "")])


def counting(exporter: PrometheusExporter, method: str) -> list[int]:
    """Count calls of one of the exporter's methods (wrapped on the instance)."""
    calls = [0]
    original = getattr(exporter, method)

    def wrapper(*args: Any) -> Any:
        calls[0] += 1
        return original(*args)

    setattr(exporter, method, wrapper)
    return calls


@pytest.mark.parametrize(
    ("limits", "overflows"),
    [({}, False), ({"_MAX_CACHED_LABELS": 5}, True), ({"_MAX_CACHED_LABELS": 7, "_MAX_PLANS": 2}, True)],
    ids=["default caches", "label cache overflows", "label cache and cache count overflow"],
)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_exporter_renders_the_same_bytes_for_attribute_sets_and_plain_dicts(
    monkeypatch: pytest.MonkeyPatch, seed: int, limits: dict[str, int], overflows: bool
) -> None:
    for name, value in limits.items():
        assert hasattr(prometheus_exporter, name), name
        monkeypatch.setattr(prometheus_exporter, name, value)
    clock = Clock()
    with_dicts = PrometheusExporter(PrometheusExporterConfig(), clock=clock)
    with_sets = PrometheusExporter(PrometheusExporterConfig(), clock=clock)
    label_builds = counting(with_sets, "_labels")
    forgets = counting(with_sets, "_forget_labels")
    scenario = Scenario(seed)
    points = 0
    for step, (dicts, sets) in enumerate(scenario.steps(80, clock)):
        with_dicts.export(dicts)
        with_sets.export(sets)
        points += sum(
            len(m.data.data_points) for rm in sets.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        )
        expected = with_dicts.render()
        assert with_sets.render() == expected, f"step {step}"
        assert with_sets.series_count() == with_dicts.series_count()
    assert b"http_requests_total{" in expected or b"http_duration_seconds_bucket{" in expected
    assert points > 500
    if overflows:
        assert forgets[0] > 0, "the label cache never overflowed: the limits did not take"
    else:
        assert forgets[0] == 0
        assert label_builds[0] < points / 3, "the per-set label cache was not used"


def test_exporter_output_for_a_set_does_not_depend_on_the_cache_being_warm(monkeypatch: pytest.MonkeyPatch) -> None:
    # One AttributeSet reused after the cache was forgotten must still give its own labels, not a neighbour's.
    monkeypatch.setattr(prometheus_exporter, "_MAX_CACHED_LABELS", 1)
    clock = Clock()
    exporter = PrometheusExporter(PrometheusExporterConfig(), clock=clock)
    first, second = AttributeSet({"route": "/first"}), AttributeSet({"route": "/second"})
    resource = Resource({"service.name": "shop", "process.pid": 1})

    def export(value: float) -> None:
        points = [NumberDataPoint(first, 1, 2, value), NumberDataPoint(second, 1, 2, 10 * value)]
        metric = Metric("requests", "", "1", Sum(points, CUMULATIVE, True))
        exporter.export(
            MetricsData([ResourceMetrics(resource, [ScopeMetrics(InstrumentationScope("a"), [metric], "")], "")])
        )

    for value in (1.0, 2.0, 3.0):
        export(value)
    lines = [line for line in exporter.render().decode().splitlines() if line.startswith("requests_total")]
    values = {line.split('route="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1]) for line in lines}
    assert values == {"/first": 3.0, "/second": 30.0}


# --- sanitize: same output for AttributeSets and plain dicts; never another set's cached result ---------------------


class NsClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> int:
        return self.now


def sanitizer(clock: Callable[[], int] | None = None, **config: Any) -> SanitizeProcessor:
    context = ProcessorContext(
        registry=MetricsRegistry(), clock=clock or NsClock(), secrets={"pseudonym_key": KEY}, component_id="sanitize"
    )
    return SanitizeProcessor(SanitizeConfig(**config), context)


def one_metric(points: Sequence[tuple[Mapping[str, Any], float]], name: str = "requests") -> MetricsData:
    data = [NumberDataPoint(attributes, START, START + SECOND, value) for attributes, value in points]
    metric = Metric(name, "", "1", Sum(data, CUMULATIVE, True))
    scope = ScopeMetrics(InstrumentationScope("app"), [metric], "")
    return MetricsData([ResourceMetrics(Resource({"service.name": "api"}), [scope], "")])


def outcome(data: MetricsData) -> list[tuple[str, list[tuple[str, str, str]], Any]]:
    """Every point as (metric, attributes with their types, value), in output order."""
    result: list[tuple[str, list[tuple[str, str, str]], Any]] = []
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points: Sequence[Any] = metric.data.data_points
                result.extend((metric.name, typed(point.attributes), point.value) for point in points)
    return result


def sanitized(processor: SanitizeProcessor, attributes: Mapping[str, Any]) -> Any:
    """The attributes of the one point of a one-point batch, after sanitize (nothing else kept alive)."""
    result = processor.process(one_metric([(attributes, 1.0)]))
    (point,) = result.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    return point.attributes


# Values per key, equal values of different types among them (1, 1.0, True): sanitize's cache must tell them apart.
SANITIZE_POOL: dict[str, list[Any]] = {
    "client_id": ["c-1", "c-2", "ana@example.com", "", 7, 7.0, True, 1, 123456789012, ("c-1", "c-2")],
    "user.id": ["u-9", 42, 42.0],
    "route": ["/users/ana@example.com", "/health", "/pay?token=s3cr3t-t0k3n-value", "/p/" + "x" * 300, "/a"],
    "peer": ["10.1.2.3", "::1", "db.local"],
    "doc": ["529.982.247-25", "nothing", 52998224725, 52998224725.0],
    "status": [200, 404],
    "flag": [False],
    "ratio": [0.25],
}
SANITIZE_KEYS = list(SANITIZE_POOL)
series_strategy = st.lists(
    st.tuples(*[st.integers(-1, len(SANITIZE_POOL[key]) - 1) for key in SANITIZE_KEYS]), min_size=1, max_size=12
)


def content_of(choice: tuple[int, ...]) -> dict[str, Any]:
    return {key: SANITIZE_POOL[key][index] for key, index in zip(SANITIZE_KEYS, choice, strict=True) if index >= 0}


@pytest.mark.parametrize("cache_size", [50_000, 2], ids=["roomy cache", "cache emptied often"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(series=series_strategy, batches=st.lists(st.lists(st.integers(0, 11), max_size=8, unique=True), max_size=6))
def test_sanitize_gives_the_same_output_for_attribute_sets_and_plain_dicts(
    cache_size: int, series: list[tuple[int, ...]], batches: list[list[int]]
) -> None:
    contents = [content_of(choice) for choice in series]
    sets = [AttributeSet(content) for content in contents]
    clock = NsClock()
    with_dicts, with_sets = sanitizer(clock, cache_size=cache_size), sanitizer(clock, cache_size=cache_size)
    for number, indices in enumerate(batches):
        clock.now += 10 * SECOND
        chosen = sorted({i % len(contents) for i in indices})
        # Equal contents are one series: a batch holds each at most once, as a real batch would.
        unique = list({repr(typed(contents[i])): i for i in chosen}.values())
        dict_out = with_dicts.process(one_metric([(dict(contents[i]), number + 1.0) for i in unique]))
        set_out = with_sets.process(one_metric([(sets[i], number + 1.0) for i in unique]))
        assert outcome(set_out) == outcome(dict_out)


def test_sanitize_hashes_client_ids_and_redacts_emails_alike_for_sets_and_dicts() -> None:
    content = {"client_id": "acme-42", "route": "/users/ana@example.com/orders", "status": 200}
    from_dict = sanitized(sanitizer(), dict(content))
    from_set = sanitized(sanitizer(), AttributeSet(content))
    assert typed(from_set) == typed(from_dict)
    assert from_set["client_id"] != "acme-42"
    assert from_set["client_id"].startswith("u_")
    assert "ana@example.com" not in from_set["route"]


def test_sanitize_returns_one_shared_attribute_set_per_input_set_across_batches() -> None:
    processor = sanitizer()
    source = AttributeSet({"client_id": "acme-42", "route": "/a"})
    first = sanitized(processor, source)
    again = sanitized(processor, source)
    assert type(first) is AttributeSet
    assert again is first  # so the exporter's per-set label cache hits too
    assert first == sanitized(sanitizer(), dict(source))


def test_sanitize_gives_equal_sets_with_different_tokens_each_their_own_equal_result() -> None:
    processor = sanitizer()
    content = {"client_id": "acme-42", "route": "/users/ana@example.com"}
    first, second = AttributeSet(content), AttributeSet(content)
    assert first.token != second.token
    results = [sanitized(processor, first), sanitized(processor, second), sanitized(processor, first)]
    expected = sanitized(sanitizer(), dict(content))
    assert [typed(result) for result in results] == [typed(expected)] * 3


def test_sanitize_does_not_serve_a_freed_sets_result_to_a_new_set_at_the_same_address() -> None:
    processor = sanitizer()
    cases = [
        ({"route": "/users/ana@example.com", "client_id": "c-1"}, {"route": "/health", "client_id": "c-2"}),
        ({"route": "/health"}, {"route": "/users/bob@example.org"}),  # unchanged first, then one that must change
        ({"client_id": "c-1"}, {"client_id": "c-1", "extra": "x"}),
    ]
    for old_content, new_content in cases:
        old = AttributeSet(old_content)
        address, old_token = id(old), old.token
        sanitized(processor, old)
        del old  # its last reference: freed now (a gc.collect() here would free other blocks ahead of it)
        held: list[AttributeSet] = []  # candidates at other addresses stay alive, so the freed slot is the one reused
        new = AttributeSet(new_content)
        while id(new) != address and len(held) < 10_000:
            held.append(new)
            new = AttributeSet(new_content)
        assert id(new) == address, "CPython did not reuse the freed set's memory: the case is not exercised"
        assert new.token != old_token
        assert typed(sanitized(processor, new)) == typed(sanitized(sanitizer(), dict(new_content)))


def test_sanitize_fed_its_own_output_leaves_it_as_it_is() -> None:
    # Output sets carry tokens too; fed back (two sanitize stages with one key) they must not hit another entry.
    processor = sanitizer()
    for content in ({"client_id": "acme-42"}, {"route": "/users/ana@example.com"}, {"route": "/a", "user.id": 42}):
        once = sanitized(processor, AttributeSet(content))
        twice = sanitized(processor, once)
        assert typed(twice) == typed(once)


def test_sanitize_with_a_tiny_cache_still_gives_each_set_its_own_result() -> None:
    processor = sanitizer(cache_size=1)
    contents = [{"client_id": f"c-{i}", "route": f"/r/{i}@example.com" if i % 2 else f"/r/{i}"} for i in range(12)]
    sets = [AttributeSet(content) for content in contents]
    fresh = sanitizer()
    expected = [typed(sanitized(fresh, dict(content))) for content in contents]
    for _ in range(3):
        assert [typed(sanitized(processor, s)) for s in sets] == expected


# --- The decoder: one AttributeSet per distinct set, shared within and across bodies ---------------------------------


def kv(key: str, **value: Any) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


ROUTE_A = [kv("route", string_value="/a"), kv("status", int_value=200)]
ROUTE_B = [kv("route", string_value="/b"), kv("status", int_value=200)]


def otlp_body(attribute_lists: Sequence[Sequence[KeyValue]], *, workers: int = 1, value: int = 1) -> bytes:
    """One request: per worker (resource) a counter, a gauge and a histogram, each with a point per attribute list."""
    request = ExportMetricsServiceRequest()
    for worker in range(workers):
        resource_metrics = request.resource_metrics.add()
        resource_metrics.resource.attributes.append(kv("process.pid", int_value=worker + 1))
        scope = resource_metrics.scope_metrics.add()
        counter = scope.metrics.add(name="requests")
        counter.sum.aggregation_temporality = 2
        counter.sum.is_monotonic = True
        gauge = scope.metrics.add(name="temperature")
        histogram = scope.metrics.add(name="duration", unit="s")
        histogram.histogram.aggregation_temporality = 2
        for attributes in attribute_lists:
            counter.sum.data_points.add(start_time_unix_nano=1, time_unix_nano=2, as_int=value).attributes.extend(
                attributes
            )
            gauge.gauge.data_points.add(time_unix_nano=2, as_double=value / 2).attributes.extend(attributes)
            histogram.histogram.data_points.add(
                start_time_unix_nano=1,
                time_unix_nano=2,
                count=value,
                sum=1.0,
                bucket_counts=[value, 0],
                explicit_bounds=[1.0],
            ).attributes.extend(attributes)
    body: bytes = request.SerializeToString()
    return body


def decoded_attributes(decoder: OTLPMetricsDecoder, body: bytes, *, as_json: bool = False) -> list[Any]:
    data = decoder.decode(body, as_json=as_json).data
    return [
        point.attributes
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in metric.data.data_points
    ]


def test_decoder_gives_every_point_of_a_set_in_a_body_the_same_attribute_set() -> None:
    # Two workers, three metric kinds, the set twice per metric: twelve points, one object.
    attributes = decoded_attributes(OTLPMetricsDecoder(), otlp_body([ROUTE_A, ROUTE_B, ROUTE_A], workers=2))
    a_points = [a for a in attributes if a["route"] == "/a"]
    assert len(a_points) == 12
    assert all(type(a) is AttributeSet for a in attributes)
    assert all(a is a_points[0] for a in a_points)
    assert a_points[0] == {"route": "/a", "status": 200}


def test_decoder_gives_a_set_the_same_attribute_set_in_later_bodies() -> None:
    decoder = OTLPMetricsDecoder()
    first = decoded_attributes(decoder, otlp_body([ROUTE_A, ROUTE_B], value=1))
    later = decoded_attributes(decoder, otlp_body([ROUTE_B, ROUTE_A], value=5))
    by_route = {a["route"]: a for a in first}
    assert all(a is by_route[a["route"]] for a in later)
    assert {a.token for a in later} == {a.token for a in first}


def test_decoder_shares_sets_between_json_and_protobuf_bodies() -> None:
    decoder = OTLPMetricsDecoder()
    from_protobuf = decoded_attributes(decoder, otlp_body([ROUTE_A]))
    request = ExportMetricsServiceRequest.FromString(otlp_body([ROUTE_A]))
    body = json.dumps(json_format.MessageToDict(request)).encode()
    from_json = decoded_attributes(decoder, body, as_json=True)
    assert from_json and all(a is from_protobuf[0] for a in from_json + from_protobuf)


# name -> (encoded attributes, the attributes they stand for, with their types)
DISTINCT_SETS: dict[str, tuple[list[KeyValue], dict[str, Any]]] = {
    "string 1": ([kv("v", string_value="1")], {"v": "1"}),
    "int 1": ([kv("v", int_value=1)], {"v": 1}),
    "double 1.0": ([kv("v", double_value=1.0)], {"v": 1.0}),
    "bool true": ([kv("v", bool_value=True)], {"v": True}),
    "bytes 1": ([kv("v", bytes_value=b"1")], {"v": b"1"}),
    "array [1]": ([kv("v", array_value={"values": [AnyValue(int_value=1)]})], {"v": (1,)}),
    "empty value": ([KeyValue(key="v")], {"v": None}),
    "other key": ([kv("w", string_value="1")], {"w": "1"}),
    "extra key": ([kv("v", string_value="1"), kv("w", string_value="1")], {"v": "1", "w": "1"}),
    "no attributes": ([], {}),
}


def test_decoder_gives_different_sets_different_attribute_sets() -> None:
    decoder = OTLPMetricsDecoder()
    sets = [decoded_attributes(decoder, otlp_body([encoded]))[0] for encoded, _ in DISTINCT_SETS.values()]
    assert len({id(s) for s in sets}) == len(sets)
    assert len({s.token for s in sets}) == len(sets)
    # Each set holds its own values with their own types (1, 1.0 and True are equal as Python values).
    assert [typed(s) for s in sets] == [typed(expected) for _, expected in DISTINCT_SETS.values()]
    again = [decoded_attributes(decoder, otlp_body([encoded]))[0] for encoded, _ in DISTINCT_SETS.values()]
    assert all(a is b for a, b in zip(again, sets, strict=True))


def test_decoder_with_an_overflowing_cache_never_hands_out_another_sets_attributes() -> None:
    decoder = OTLPMetricsDecoder(max_cached_attribute_sets=2)
    lists = [[kv("route", string_value=f"/{i}"), kv("n", int_value=i)] for i in range(7)]
    tokens: dict[str, set[int]] = {}
    for round_ in range(4):
        for i in range(round_, round_ + 7):
            (attributes,) = {id(a): a for a in decoded_attributes(decoder, otlp_body([lists[i % 7]]))}.values()
            assert typed(attributes) == typed({"route": f"/{i % 7}", "n": i % 7})
            tokens.setdefault(attributes["route"], set()).add(attributes.token)
    # Emptied caches make new sets for old content (new tokens), which is allowed; a token never names two contents.
    all_tokens = [token for group in tokens.values() for token in group]
    assert len(all_tokens) == len(set(all_tokens))
    assert any(len(group) > 1 for group in tokens.values()), "the cache never overflowed"


@pytest.mark.parametrize(
    ("seen_first", "then"),
    [(52998224725.0, 52998224725), (5511987654321.0, 5511987654321), (4111111111111111.0, 4111111111111111)],
    ids=["cpf", "phone", "card"],
)
def test_sanitize_redacts_an_int_even_after_an_equal_float_was_seen(seen_first: float, then: int) -> None:
    processor = sanitizer()
    sanitized(processor, {"doc": seen_first})
    assert sanitized(processor, {"doc": then}) == sanitized(sanitizer(), {"doc": then})


@pytest.mark.parametrize(("first", "then"), [(1, True), (1, 1.0), (True, 1), (1.0, 1)])
def test_sanitize_caches_tell_apart_equal_values_of_different_types(first: Any, then: Any) -> None:
    with_dicts, with_sets = sanitizer(), sanitizer()
    for value in (first, then):
        assert typed(sanitized(with_dicts, {"client_id": value})) == typed(
            sanitized(with_sets, AttributeSet({"client_id": value}))
        ), f"after {first!r}, {value!r}"


# --- the decoder's points: instance dicts filled directly, or the constructor -----------------------------------


def _request_with_every_point_kind() -> bytes:
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    number = NumberDataPoint({"route": "/a", "code": 200}, START, START + SECOND, 7.5)
    integer = NumberDataPoint({"route": "/b"}, START, START + SECOND, 3)
    histogram = HistogramDataPoint({"route": "/a"}, START, START + SECOND, 3, 6.0, [1, 1, 1], [1.0, 2.0], 1.0, 3.0)
    metrics = [
        Metric("gauge", "", "1", Gauge([number])),
        Metric("requests", "", "1", Sum([integer], CUMULATIVE, True)),
        Metric("latency", "", "s", Histogram([histogram], CUMULATIVE)),
    ]
    scope = ScopeMetrics(InstrumentationScope("app"), metrics, "")
    data = MetricsData([ResourceMetrics(Resource({"service.name": "shop"}), [scope], "")])
    return bytes(encode_metrics(data).SerializeToString())


def _decoded_points(body: bytes | None = None) -> list[Any]:
    decoded = OTLPMetricsDecoder().decode_protobuf(body or _request_with_every_point_kind())
    return [
        point
        for resource_metrics in decoded.data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        for point in metric.data.data_points
    ]


def test_decoded_points_equal_what_the_sdk_constructor_makes() -> None:
    import dataclasses

    from otel_monitoring.sidecar import otlp

    assert otlp._FAST_POINTS  # the SDK pinned here has dict-backed points: the fast path is the one under test
    points = _decoded_points()
    assert {type(point) for point in points} == {NumberDataPoint, HistogramDataPoint}
    for point in points:
        built = type(point)(**{field.name: getattr(point, field.name) for field in dataclasses.fields(point)})
        assert point == built and vars(point) == vars(built)


def test_without_dict_backed_points_the_decoder_uses_the_constructor(monkeypatch: pytest.MonkeyPatch) -> None:

    from otel_monitoring.sidecar import otlp

    body = _request_with_every_point_kind()
    fast = _decoded_points(body)
    monkeypatch.setattr(otlp, "_FAST_POINTS", False)
    constructed: list[type] = []
    for cls in (NumberDataPoint, HistogramDataPoint):
        original = cls.__init__

        def counting_init(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> None:
            constructed.append(type(self))
            _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", counting_init)

    slow = _decoded_points(body)

    assert sorted(cls.__name__ for cls in constructed) == sorted(type(point).__name__ for point in slow)
    assert slow == fast


def test_a_slotted_or_changed_point_class_is_not_dict_backed() -> None:
    import dataclasses

    from otel_monitoring.sidecar import otlp

    @dataclasses.dataclass(frozen=True, slots=True)
    class SlottedPoint:
        value: int

    @dataclasses.dataclass(frozen=True)
    class PlainPoint:
        value: int

    assert not otlp._dict_backed(SlottedPoint, ("value",))
    assert otlp._dict_backed(PlainPoint, ("value",))
    assert not otlp._dict_backed(PlainPoint, ("value", "exemplars"))  # a field the fast path would not fill
