"""The cache API: ``metrics.cache(name)`` counts hits, misses, sets and evictions and times operations."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families

from otel_monitoring import metrics
from otel_monitoring.collectors.cache import CACHE_DURATION_BUCKETS, _command_name, _RedisRecorder
from otel_monitoring.exporter import render_exposition
from otel_monitoring.metrics import MetricsRegistry
from otel_monitoring.settings import load_settings
from otel_monitoring.telemetry import Telemetry


def operations(registry: MetricsRegistry) -> dict[tuple[Any, ...], float]:
    family = registry.get("cache.operations")
    assert family is not None
    return {series.label_values: series.cell.get() for series in family.series()}  # type: ignore[union-attr]


def durations(registry: MetricsRegistry) -> dict[tuple[Any, ...], list[int]]:
    family = registry.get("cache.operation.duration")
    assert family is not None
    return {series.label_values: series.cell.snapshot()[0] for series in family.series()}  # type: ignore[union-attr]


def count(registry: MetricsRegistry, *labels: Any) -> int:
    return sum(durations(registry).get(labels, [0]))


def test_counts_hits_misses_sets_and_evictions_per_cache_name() -> None:
    registry = MetricsRegistry()
    sessions = metrics.cache("sessions", registry=registry)
    profiles = metrics.cache("profiles", registry=registry)
    for _ in range(3):
        sessions.hit()
    sessions.miss()
    sessions.set()
    sessions.evict(4)
    profiles.miss(2)

    counted = operations(registry)

    assert counted[("sessions", "hit")] == 3
    assert counted[("sessions", "miss")] == 1
    assert counted[("sessions", "set")] == 1
    assert counted[("sessions", "evict")] == 4
    assert counted[("profiles", "miss")] == 2
    assert counted[("profiles", "hit")] == 0


def test_same_name_returns_the_same_object_per_registry() -> None:
    registry, other = MetricsRegistry(), MetricsRegistry()

    assert metrics.cache("sessions", registry=registry) is metrics.cache("sessions", registry=registry)
    assert metrics.cache("sessions", registry=registry) is not metrics.cache("sessions", registry=other)
    assert metrics.cache("sessions", registry=registry) is not metrics.cache("tokens", registry=registry)


@pytest.mark.parametrize("name", ["", "   "])
def test_refuses_an_empty_cache_name(name: str) -> None:
    with pytest.raises(ValueError, match="cache name must be a non-empty string"):
        metrics.cache(name, registry=MetricsRegistry())


def test_refuses_a_cache_name_that_is_not_a_string() -> None:
    with pytest.raises(TypeError, match=r"cache name must be a string.*got int"):
        metrics.cache(42, registry=MetricsRegistry())  # type: ignore[arg-type]


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        metrics.cache("sessions", registry=MetricsRegistry()).evict(-1)


def test_lookup_counts_a_miss_for_the_sentinel_and_a_hit_otherwise() -> None:
    registry = MetricsRegistry()
    sessions = metrics.cache("sessions", registry=registry)
    store = {"alpha": 1}

    @sessions.lookup()
    def find(key: str) -> int | None:
        return store.get(key)

    assert [find("alpha"), find("beta"), find("alpha")] == [1, None, 1]

    assert operations(registry)[("sessions", "hit")] == 2
    assert operations(registry)[("sessions", "miss")] == 1
    assert count(registry, "sessions", "get", "") == 3
    assert find.__name__ == "find"


def test_lookup_treats_falsy_values_other_than_the_sentinel_as_hits() -> None:
    registry = MetricsRegistry()
    missing = object()
    sessions = metrics.cache("sessions", registry=registry)
    store: dict[str, object] = {"empty": "", "zero": 0}

    @sessions.lookup(miss=missing)
    def find(key: str) -> object:
        return store.get(key, missing)

    results = [find("empty"), find("zero"), find("absent")]

    assert results[:2] == ["", 0]
    assert operations(registry)[("sessions", "hit")] == 2
    assert operations(registry)[("sessions", "miss")] == 1


def test_lookup_works_on_async_functions() -> None:
    registry = MetricsRegistry()
    sessions = metrics.cache("sessions", registry=registry)

    @sessions.lookup(operation="fetch")
    async def find(key: str) -> str | None:
        await asyncio.sleep(0)
        return key.upper() if key.startswith("a") else None

    async def run() -> list[str | None]:
        return [await find("ab"), await find("bc"), await find("ad")]

    assert asyncio.run(run()) == ["AB", None, "AD"]
    assert operations(registry)[("sessions", "hit")] == 2
    assert operations(registry)[("sessions", "miss")] == 1
    assert count(registry, "sessions", "fetch", "") == 3


def test_lookup_that_raises_counts_neither_hit_nor_miss_and_records_the_error_type() -> None:
    registry = MetricsRegistry()
    sessions = metrics.cache("sessions", registry=registry)

    @sessions.lookup()
    def find(key: str) -> str:
        raise ConnectionError(key)

    with pytest.raises(ConnectionError):
        find("alpha")

    assert operations(registry)[("sessions", "hit")] == 0
    assert operations(registry)[("sessions", "miss")] == 0
    assert count(registry, "sessions", "get", "ConnectionError") == 1


def test_time_records_duration_by_operation_and_error_type() -> None:
    registry = MetricsRegistry()
    sessions = metrics.cache("sessions", registry=registry)

    with sessions.time("set"):
        pass
    with pytest.raises(TimeoutError), sessions.time("get"):
        raise TimeoutError

    @sessions.time("delete")
    def delete() -> str:
        return "deleted"

    assert delete() == "deleted"
    assert count(registry, "sessions", "set", "") == 1
    assert count(registry, "sessions", "get", "TimeoutError") == 1
    assert count(registry, "sessions", "get", "") == 0
    assert count(registry, "sessions", "delete", "") == 1


def test_observe_puts_a_duration_in_the_bucket_it_belongs_to() -> None:
    registry = MetricsRegistry()
    sessions = metrics.cache("sessions", registry=registry)

    sessions.observe("get", 0.0003)

    buckets = durations(registry)[("sessions", "get", "")]
    assert buckets[CACHE_DURATION_BUCKETS.index(0.0005)] == 1
    assert sum(buckets) == 1


def test_time_refuses_an_empty_operation_name() -> None:
    with pytest.raises(ValueError, match="cache operation must be a non-empty string"):
        metrics.cache("sessions", registry=MetricsRegistry()).time("")


def test_exposition_carries_the_labels_the_hit_ratio_query_uses() -> None:
    registry = MetricsRegistry()
    telemetry = Telemetry(
        load_settings(environ={}), registry, extra_readers=[InMemoryMetricReader()], start_exporters=False
    )
    try:
        sessions = metrics.cache("sessions", registry=registry)
        for _ in range(3):
            sessions.hit()
        sessions.miss()
        sessions.observe("get", 0.002)
        text = render_exposition(telemetry.prometheus_registry, None, None)[0].decode()
    finally:
        telemetry.shutdown()

    samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    by_result = {
        s.labels["cache_operation_result"]: s.value
        for s in samples
        if s.name == "cache_operations_total" and s.labels.get("cache_name") == "sessions"
    }
    # The documented hit ratio: hits / (hits + misses), by cache_name.
    assert by_result["hit"] / (by_result["hit"] + by_result["miss"]) == 0.75
    counts = [s for s in samples if s.name == "cache_operation_duration_seconds_count"]
    assert [(s.labels["cache_name"], s.labels["cache_operation_name"], s.value) for s in counts] == [
        ("sessions", "get", 1.0)
    ]


# Replies as redis-py returns them: True / None for SET without GET, the old value (or None) with GET.
@pytest.mark.parametrize(
    ("args", "reply", "wrote"),
    [
        (("SET", "k", "v"), True, True),
        (("SET", "k", "v", "NX"), None, False),  # NX on an existing key
        (("SET", "k", "v", "XX", "EX", 30), True, True),
        (("SET", "k", "v", "GET"), None, True),  # a new key: nil old value, written all the same
        (("SET", "k", "v", "GET"), b"old", True),
        (("SET", "k", "v", "EX", 30, "GET"), None, True),
        ((b"SET", b"k", b"v", b"get"), None, True),  # raw execute_command, any case
        (("SET", "k", "v", "NX", "GET"), None, True),  # NX GET: written when there was no old value
        (("SET", "k", "v", "NX", "GET"), b"old", False),
        (("SET", "k", "v", "XX", "GET"), None, False),  # XX GET: written only over an old value
        (("SET", "k", "v", "XX", "GET"), b"old", True),
        (("SET", "k", "v", "IFEQ", "old", "GET"), "old", True),
        (("SET", "k", "v", "IFEQ", "old", "GET"), "other", False),
        (("SET", "k", "v", "IFEQ", 7, "GET"), b"7", True),
        (("SET", "k", "v", "IFNE", "old", "GET"), None, True),
        (("SET", "k", "v", "IFNE", "old", "GET"), b"old", False),
        (("SET", "k", "v", "IFEQ", "GET"), None, False),  # "GET" here is IFEQ's comparison value, not the option
        (("SET", "k", "v", "IFDEQ", "abc", "GET"), b"old", False),  # a digest the reply cannot tell
        (("GETSET", "k", "v"), None, True),  # always writes; the reply is the old value
        (("GETSET", "k", "v"), b"old", True),
        (("SETNX", "k", "v"), False, False),
        (("SETNX", "k", "v"), True, True),
        (("SETEX", "k", 30, "v"), True, True),
    ],
)
def test_redis_write_replies_count_a_set_only_when_the_value_was_written(
    args: tuple[Any, ...], reply: Any, wrote: bool
) -> None:
    registry = MetricsRegistry()
    recorder = _RedisRecorder(metrics.cache("redis", registry=registry))

    recorder.results(_command_name(args), args, reply)

    assert operations(registry)[("redis", "set")] == (1 if wrote else 0)
    assert sum(operations(registry).values()) == (1 if wrote else 0)  # a write is never a hit or a miss
