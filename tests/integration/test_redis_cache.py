"""redis-py clients, sync and asyncio, against a real redis-server on 127.0.0.1: hits, misses, sets and
evictions per key, and every command's duration, with pipelines counted once."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from otel_monitoring.collectors.cache import RedisInstrumentor
from otel_monitoring.metrics import MetricsRegistry
from otel_monitoring.settings import load_settings
from tests.support import free_port, stop_process_group

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
pytestmark = pytest.mark.skipif(
    not Path(REDIS_SERVER).exists(), reason="redis-server is not installed (Debian: apt-get install redis-server)"
)


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    argv = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [*argv, "--dir", str(workdir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read().decode(errors="replace") if process.stdout else ""
                    pytest.fail(f"redis-server did not start on port {port}:\n{output}")
                time.sleep(0.05)
        client.close()
        yield port
    finally:
        stop_process_group(process)
        if process.stdout:
            process.stdout.close()


@pytest.fixture
def registry(redis_port: int) -> Iterator[MetricsRegistry]:
    redis.Redis(port=redis_port).flushall()
    registry = MetricsRegistry()
    RedisInstrumentor().instrument(registry=registry, settings=load_settings(environ={}))
    try:
        yield registry
    finally:
        RedisInstrumentor().uninstrument()


def results(registry: MetricsRegistry, cache_name: str = "redis") -> dict[str, float]:
    family = registry.get("cache.operations")
    if family is None:
        return {}
    return {
        series.label_values[1]: series.cell.get()  # type: ignore[union-attr]
        for series in family.series()
        if series.label_values[0] == cache_name and series.cell.get()  # type: ignore[union-attr]
    }


def timed(registry: MetricsRegistry, cache_name: str = "redis") -> dict[tuple[str, str], int]:
    family = registry.get("cache.operation.duration")
    if family is None:
        return {}
    return {
        series.label_values[1:]: sum(series.cell.snapshot()[0])  # type: ignore[union-attr]
        for series in family.series()
        if series.label_values[0] == cache_name
    }


def test_reads_count_hits_and_misses_per_key(registry: MetricsRegistry, redis_port: int) -> None:
    client = redis.Redis(port=redis_port)
    client.set("session:1", "ana")  # a set
    client.mset({"session:2": "bob", "session:3": "eve"})  # two sets
    assert client.get("session:1") == b"ana"  # a hit
    assert client.get("session:404") is None  # a miss
    assert client.mget(["session:1", "session:2", "nope:1", "nope:2", "nope:3"]).count(None) == 3  # 2 hits, 3 misses
    client.hset("profile:1", mapping={"name": "ana", "plan": "pro"})  # two sets
    assert client.hget("profile:1", "name") == b"ana"  # a hit
    assert client.hmget("profile:1", ["plan", "absent"]) == [b"pro", None]  # a hit and a miss
    assert client.hgetall("profile:404") == {}  # a miss
    assert client.delete("session:1", "session:2", "session:404") == 2  # two evictions
    assert client.getdel("session:3") == b"eve"  # a hit and an eviction
    client.close()

    assert results(registry) == {"set": 5, "hit": 6, "miss": 6, "evict": 3}


def test_every_command_is_timed_by_name_and_unknown_ones_as_other(registry: MetricsRegistry, redis_port: int) -> None:
    client = redis.Redis(port=redis_port)
    client.set("k", "v")
    client.get("k")
    client.get("k")
    client.execute_command("OBJECT", "ENCODING", "k")
    with pytest.raises(redis.ResponseError):
        client.execute_command("NOSUCHCOMMAND")
    client.close()

    counts = timed(registry)
    assert counts[("set", "")] == 1
    assert counts[("get", "")] == 2
    assert counts[("other", "")] == 1
    assert counts[("other", "ResponseError")] == 1
    assert not any("OBJECT" in name.upper() or "NOSUCH" in name.upper() for name, _ in counts)


def test_pipeline_counts_each_command_once_and_times_the_round_trip(registry: MetricsRegistry, redis_port: int) -> None:
    client = redis.Redis(port=redis_port)
    for transaction in (False, True):
        with client.pipeline(transaction=transaction) as pipe:
            pipe.set("p:1", "x").get("p:1").get("p:missing").delete("p:1")
            assert pipe.execute() == [True, b"x", None, 1]
    client.close()

    assert results(registry) == {"set": 2, "hit": 2, "miss": 2, "evict": 2}
    counts = timed(registry)
    assert counts == {("pipeline", ""): 2}  # no per-command durations: they share one round trip


def test_watched_reads_before_multi_are_counted(registry: MetricsRegistry, redis_port: int) -> None:
    client = redis.Redis(port=redis_port)
    client.set("balance", "10")
    with client.pipeline() as pipe:
        pipe.watch("balance")
        current = int(pipe.get("balance") or 0)  # runs at once, through immediate_execute_command
        pipe.multi()
        pipe.set("balance", current + 1)
        pipe.execute()
    client.close()

    assert results(registry) == {"set": 2, "hit": 1}


def test_asyncio_client_and_pipeline_are_recorded(registry: MetricsRegistry, redis_port: int) -> None:
    async def work() -> list[Any]:
        client = redis.asyncio.Redis(port=redis_port)
        try:
            await client.set("a:1", "x")
            got = [await client.get("a:1"), await client.get("a:2")]
            async with client.pipeline() as pipe:
                pipe.mget(["a:1", "a:2", "a:3"])
                pipe.unlink("a:1")
                got.append(await pipe.execute())
            return got
        finally:
            await client.aclose()

    assert asyncio.run(work()) == [b"x", None, [[b"x", None, None], 1]]
    assert results(registry) == {"set": 1, "hit": 2, "miss": 3, "evict": 1}
    counts = timed(registry)
    assert (counts[("set", "")], counts[("get", "")], counts[("pipeline", "")]) == (1, 2, 1)


def test_cache_name_carries_the_database_number(registry: MetricsRegistry, redis_port: int) -> None:
    client = redis.Redis(port=redis_port, db=3)
    client.get("missing")
    client.close()

    assert results(registry, "redis/3") == {"miss": 1}
    assert results(registry, "redis") == {}


def test_connection_errors_are_timed_with_their_type_and_reach_the_app(registry: MetricsRegistry) -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=1, retry=None)
    with pytest.raises(redis.ConnectionError):
        client.get("k")

    assert timed(registry) == {("get", "ConnectionError"): 1}
    assert results(registry) == {}


def test_setting_off_and_uninstrument_leave_redis_untouched(redis_port: int) -> None:
    original = redis.Redis.execute_command
    registry = MetricsRegistry()
    RedisInstrumentor().instrument(
        registry=registry, settings=load_settings(environ={"OTEL_MONITORING_REDIS_METRICS": "false"})
    )
    try:
        patched_while_off = redis.Redis.execute_command
    finally:
        RedisInstrumentor().uninstrument()
    RedisInstrumentor().instrument(registry=registry, settings=load_settings(environ={}))
    patched = redis.Redis.execute_command
    RedisInstrumentor().uninstrument()
    client = redis.Redis(port=redis_port)
    client.get("k")
    client.close()

    assert patched_while_off is original
    assert patched is not original
    assert redis.Redis.execute_command is original
    assert results(registry) == {}


def test_writes_that_reply_with_the_old_value_count_a_set_even_on_a_new_key(
    registry: MetricsRegistry, redis_port: int
) -> None:
    client = redis.Redis(port=redis_port)
    wrote = []
    assert client.getset("g:new", "1") is None  # a new key: nil reply, written all the same
    wrote.append(client.get("g:new") == b"1")
    assert client.set("s:new", "1", get=True) is None
    wrote.append(client.get("s:new") == b"1")
    assert client.set("s:new", "2", get=True) == b"1"
    wrote.append(client.get("s:new") == b"2")
    assert client.set("nx:new", "1", nx=True, get=True) is None  # NX GET on a new key writes
    wrote.append(client.get("nx:new") == b"1")
    assert client.set("nx:new", "2", nx=True, get=True) == b"1"  # ... and on an existing key does not
    held_back = [client.get("nx:new") == b"1"]
    assert client.set("xx:new", "1", xx=True, get=True) is None  # XX GET on a new key does not write
    held_back.append(client.get("xx:new") is None)
    assert client.set("nx:new", "3", xx=True, get=True) == b"1"  # ... and over an old value does
    wrote.append(client.get("nx:new") == b"3")
    client.close()

    assert all(wrote) and all(held_back)  # what the server did, read back
    assert results(registry)["set"] == len(wrote)
