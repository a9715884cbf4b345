"""Cache metrics: the cache API (``metrics.cache("sessions")``) and redis-py clients.

There is no stable OpenTelemetry semantic convention for caches, so the names are ours, modelled on the
database conventions (docs/cache-and-http-client.md):

- ``cache.operations`` (counter, ``{operation}``) by ``cache.name`` and ``cache.operation.result``
  (``hit``, ``miss``, ``set``, ``evict``); Prometheus: ``cache_operations_total``.
- ``cache.operation.duration`` (histogram, seconds) by ``cache.name``, ``cache.operation.name`` (``get``,
  ``set``, ``delete``, or a Redis command) and ``error.type``; Prometheus: ``cache_operation_duration_seconds``.

>>> from otel_monitoring import metrics
>>> sessions = metrics.cache("sessions")
>>> sessions.hit(); sessions.miss(); sessions.set(); sessions.evict(3)
>>> with sessions.time("get"):
...     value = store.get(key)
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_monitoring._instruments import CounterFamily, HistogramFamily, MetricsRegistry
from otel_monitoring.metrics import default_registry

__all__ = [
    "CACHE_DURATION_BUCKETS",
    "CACHE_OPERATIONS",
    "CACHE_OPERATION_DURATION",
    "CacheMetrics",
    "RedisInstrumentor",
    "get_cache_metrics",
]

CACHE_OPERATIONS = "cache.operations"
CACHE_OPERATION_DURATION = "cache.operation.duration"
_OPERATIONS_ATTRIBUTES = ("cache.name", "cache.operation.result")
_DURATION_ATTRIBUTES = ("cache.name", "cache.operation.name", "error.type")
# A local cache answers in microseconds and a remote one in about a millisecond; past a second it is an outage.
CACHE_DURATION_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip

_F = TypeVar("_F", bound=Callable[..., Any])
_logger = logging.getLogger(__name__)


class _Count(Protocol):
    def __call__(self, count: float = 1.0, /) -> None: ...


class CacheMetrics:
    """Hits, misses, writes, evictions and operation latency of one named cache.

    Get one with ``metrics.cache(name)``, which returns the same object for the same name. ``hit``, ``miss``,
    ``set`` and ``evict`` take an optional count (``evict(3)`` for three keys) and are the bound ``inc`` of a
    cell bound when the cache was created: one call, no lookup, no allocation.

    >>> sessions = metrics.cache("sessions")
    >>> value = local.get(key)
    >>> sessions.hit() if value is not None else sessions.miss()
    >>> @sessions.lookup()          # a hit when it returns anything but None, and its latency as "get"
    ... def find_session(token): ...
    """

    hit: _Count
    """Count cache hits (default 1)."""
    miss: _Count
    """Count cache misses (default 1)."""
    set: _Count
    """Count values written to the cache (default 1)."""
    evict: _Count
    """Count values removed from the cache: deleted, expired or evicted (default 1)."""

    def __init__(self, name: str, registry: MetricsRegistry) -> None:
        self.name = _checked_name(name)
        self._operations: CounterFamily = registry.semconv_counter(
            CACHE_OPERATIONS,
            "Cache operations by result: hit, miss, set or evict.",
            _OPERATIONS_ATTRIBUTES,
            "{operation}",
        )
        self._duration: HistogramFamily = registry.semconv_histogram(
            CACHE_OPERATION_DURATION,
            "Duration of cache operations.",
            _DURATION_ATTRIBUTES,
            "s",
            CACHE_DURATION_BUCKETS,
        )
        # Hot path: pre-bound cells, so a hit is one cell increment.
        self.hit = self._operations.labels(name, "hit").inc
        self.miss = self._operations.labels(name, "miss").inc
        self.set = self._operations.labels(name, "set").inc
        self.evict = self._operations.labels(name, "evict").inc
        # Duration cells are bound on first use: a cache that is never timed exports no empty histograms.
        self._observers: dict[tuple[str, str], Callable[[float], None]] = {}

    def __repr__(self) -> str:
        return f"CacheMetrics({self.name!r})"

    def observe(self, operation: str, seconds: float, error_type: str = "") -> None:
        """Record the duration of one operation (``get``, ``set``, ``delete`` or another low-cardinality name).

        >>> sessions.observe("get", 0.0004)
        """
        self._observer(operation, error_type)(seconds)

    def time(self, operation: str = "get") -> _OperationTimer:
        """Time a block or every call of a function as one ``operation``; an exception sets ``error.type``.

        >>> with sessions.time("set"):
        ...     store.set(key, value)
        """
        return _OperationTimer(self, operation)

    def lookup(self, miss: object = None, operation: str = "get") -> Callable[[_F], _F]:
        """Decorate a lookup function: a return value that ``is miss`` counts a miss, anything else a hit.

        The decorator caches nothing itself; it also records the call's latency as ``operation``. It works
        on plain and ``async`` functions. A call that raises counts neither a hit nor a miss; its latency is
        recorded with ``error.type``. ``miss`` is compared by identity (``is``): ``None`` or a sentinel object.

        >>> @sessions.lookup()
        ... def find_session(token: str) -> Session | None:
        ...     return local_sessions.get(token)
        >>> NOT_FOUND = object()
        >>> @sessions.lookup(miss=NOT_FOUND)
        ... async def find_profile(user_id: int) -> object:
        ...     return await redis.get(f"profile:{user_id}") or NOT_FOUND
        """
        _checked_operation(operation)
        hit, miss_count = self.hit, self.miss
        observe = self._observer(operation, "")
        cache = self

        def failed(start: float, error: BaseException) -> None:
            cache._observer(operation, type(error).__qualname__)(time.perf_counter() - start)

        def succeeded(start: float, result: Any) -> Any:
            observe(time.perf_counter() - start)
            if result is miss:
                miss_count()
            else:
                hit()
            return result

        def decorate(func: _F) -> _F:
            if inspect.iscoroutinefunction(func):

                async def tracked_async(*args: Any, **kwargs: Any) -> Any:
                    start = time.perf_counter()
                    try:
                        result = await func(*args, **kwargs)
                    except BaseException as error:
                        failed(start, error)
                        raise
                    return succeeded(start, result)

                return functools.wraps(func)(tracked_async)  # type: ignore[return-value]

            def tracked(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    result = func(*args, **kwargs)
                except BaseException as error:
                    failed(start, error)
                    raise
                return succeeded(start, result)

            return functools.wraps(func)(tracked)  # type: ignore[return-value]

        return decorate

    def _observer(self, operation: str, error_type: str) -> Callable[[float], None]:
        observe = self._observers.get((operation, error_type))
        if observe is None:
            _checked_operation(operation)
            observe = self._duration.labels(self.name, operation, error_type).observe
            if len(self._observers) < 64:  # remember a few; the family's own lookup bounds the rest
                self._observers[(operation, error_type)] = observe
        return observe


class _OperationTimer:
    """Context manager and decorator that records one cache operation's duration."""

    __slots__ = ("_cache", "_operation", "_start")

    def __init__(self, cache: CacheMetrics, operation: str) -> None:
        _checked_operation(operation)
        self._cache = cache
        self._operation = operation
        self._start = 0.0

    def __enter__(self) -> _OperationTimer:
        self._start = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        error_type = exc_type.__qualname__ if exc_type is not None else ""
        self._cache.observe(self._operation, time.perf_counter() - self._start, error_type)

    def __call__(self, func: _F) -> _F:
        cache, operation = self._cache, self._operation

        if inspect.iscoroutinefunction(func):

            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                with _OperationTimer(cache, operation):
                    return await func(*args, **kwargs)

            return functools.wraps(func)(timed_async)  # type: ignore[return-value]

        def timed(*args: Any, **kwargs: Any) -> Any:
            with _OperationTimer(cache, operation):
                return func(*args, **kwargs)

        return functools.wraps(func)(timed)  # type: ignore[return-value]


def _checked_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"cache name must be a string, like metrics.cache('sessions') (got {type(name).__name__})")
    if not name.strip():
        raise ValueError("cache name must be a non-empty string, like metrics.cache('sessions') (got an empty name)")
    return name


def _checked_operation(operation: object) -> None:
    if not isinstance(operation, str) or not operation:
        raise ValueError(
            f"cache operation must be a non-empty string such as 'get', 'set' or 'delete' (got {operation!r})"
        )


_caches: weakref.WeakKeyDictionary[MetricsRegistry, dict[str, CacheMetrics]] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def _reset_lock_in_child() -> None:
    global _caches_lock
    _caches_lock = threading.Lock()  # a fork while another thread held it would hang the child's first cache


os.register_at_fork(after_in_child=_reset_lock_in_child)


def get_cache_metrics(name: str, registry: MetricsRegistry | None = None) -> CacheMetrics:
    """The ``CacheMetrics`` of ``name`` in ``registry`` (default: the process-wide one), created on first use.

    >>> get_cache_metrics("sessions") is get_cache_metrics("sessions")
    True
    """
    registry = default_registry() if registry is None else registry
    by_name = _caches.get(registry)
    found = by_name.get(name) if by_name is not None and isinstance(name, str) else None
    if found is not None:
        return found
    with _caches_lock:
        by_name = _caches.setdefault(registry, {})
        found = by_name.get(name)
        if found is None:
            found = by_name[name] = CacheMetrics(name, registry)
        return found


# --- redis-py --------------------------------------------------------------------------------------------------

# How each command's reply turns into cache results. The names are redis-py's (upper case, as it sends them).
_READ_ONE = "read_one"  # reply is the value or None
_READ_MANY = "read_many"  # reply is a list with None for every missing key or field
_READ_HASH = "read_hash"  # reply is a dict, empty when the key is missing
_READ_DELETE = "read_delete"  # GETDEL: a hit also removes the key
_WRITE_ONE = "write_one"  # reply is truthy when the value was written (SETNX, HSETNX may not write)
_WRITE_ALWAYS = "write_always"  # GETSET: always writes; its reply is the old value, nil for a new key
_WRITE_SET = "write_set"  # SET: written unless a condition (NX, XX, IFEQ ...) held it back; see _set_wrote
_WRITE_PAIRS = "write_pairs"  # MSET key value [key value ...]: one set per key
_WRITE_PAIRS_ALL_OR_NONE = "write_pairs_all"  # MSETNX: all keys or none
_WRITE_FIELDS = "write_fields"  # HSET key field value [field value ...]: one set per field
_DELETE_COUNT = "delete_count"  # reply is the number of keys or fields removed
_TIMED_ONLY = ""

_COMMANDS: dict[str, str] = {
    "GET": _READ_ONE, "GETEX": _READ_ONE, "HGET": _READ_ONE, "GETDEL": _READ_DELETE,
    "MGET": _READ_MANY, "HMGET": _READ_MANY, "HGETALL": _READ_HASH,
    "SET": _WRITE_SET, "SETEX": _WRITE_ONE, "PSETEX": _WRITE_ONE, "SETNX": _WRITE_ONE, "GETSET": _WRITE_ALWAYS,
    "HSETNX": _WRITE_ONE, "MSET": _WRITE_PAIRS, "MSETNX": _WRITE_PAIRS_ALL_OR_NONE,
    "HSET": _WRITE_FIELDS, "HMSET": _WRITE_FIELDS,
    "DEL": _DELETE_COUNT, "UNLINK": _DELETE_COUNT, "HDEL": _DELETE_COUNT,
}  # fmt: skip
# Commands timed under their own name; any other is timed as "other", so no command string becomes a label.
_TIMED_COMMANDS = frozenset(_COMMANDS) | frozenset(
    {
        "EXISTS", "EXPIRE", "PEXPIRE", "EXPIREAT", "TTL", "PTTL", "PERSIST", "TOUCH", "TYPE", "KEYS", "SCAN",
        "INCR", "INCRBY", "INCRBYFLOAT", "DECR", "DECRBY", "HINCRBY", "HEXISTS", "HKEYS", "HVALS", "HLEN", "HSCAN",
        "LPUSH", "RPUSH", "LPOP", "RPOP", "LRANGE", "LLEN", "LREM", "BLPOP", "BRPOP",
        "SADD", "SREM", "SMEMBERS", "SISMEMBER", "SCARD", "ZADD", "ZREM", "ZRANGE", "ZRANGEBYSCORE", "ZSCORE",
        "ZCARD", "ZINCRBY", "XADD", "XREAD", "XRANGE", "PUBLISH", "EVAL", "EVALSHA", "PING", "INFO", "FLUSHDB",
        "WATCH", "UNWATCH", "PIPELINE",
    }
)  # fmt: skip
OTHER_COMMAND = "other"
PIPELINE_COMMAND = "PIPELINE"  # not a Redis command: a pipeline's round trip, timed as "pipeline"

# SET options (https://redis.io/docs/latest/commands/set/): those followed by an argument, and the conditions.
_SET_OPTIONS_WITH_ARGUMENT = frozenset({"EX", "PX", "EXAT", "PXAT", "IFEQ", "IFNE", "IFDEQ", "IFDNE"})
_SET_CONDITIONS = frozenset({"NX", "XX", "IFEQ", "IFNE", "IFDEQ", "IFDNE"})


def _token(arg: Any) -> str:
    if isinstance(arg, bytes):
        return arg.decode("ascii", "replace").upper()
    return arg.upper() if isinstance(arg, str) else ""


def _as_bytes(value: Any) -> bytes:
    """A value as redis-py puts it on the wire, to compare a reply with an IFEQ/IFNE argument."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


def _set_wrote(args: Sequence[Any], reply: Any) -> bool:
    """Whether ``SET key value [options]`` wrote, from its options and its reply.

    Without ``GET`` the reply is ``OK`` (redis-py: ``True``) when it wrote and nil when a condition held it back.
    With ``GET`` the reply is the old value (nil for a new key) and the write happened unconditionally, or as
    the condition says: ``NX`` wrote when there was no old value, ``XX`` when there was one, ``IFEQ`` when the
    old value equals the argument, ``IFNE`` when it does not. ``IFDEQ`` / ``IFDNE`` compare a digest of the old
    value, which the reply cannot tell: counted as not written.
    """
    condition, compared, get = "", None, False
    index, end = 3, len(args)
    while index < end:
        option = _token(args[index])
        if option == "GET":
            get = True
        elif option in _SET_CONDITIONS:
            condition = option
            if option in _SET_OPTIONS_WITH_ARGUMENT and index + 1 < end:
                compared = args[index + 1]
        if option in _SET_OPTIONS_WITH_ARGUMENT:
            index += 1  # skip the option's argument: a comparison value may itself read "GET"
        index += 1
    if not get:
        return bool(reply)
    if not condition:
        return True
    if condition == "NX":
        return reply is None
    if condition == "XX":
        return reply is not None
    if condition == "IFEQ":
        return reply is not None and _as_bytes(reply) == _as_bytes(compared)
    if condition == "IFNE":
        return reply is None or _as_bytes(reply) != _as_bytes(compared)
    return False


class _RedisRecorder:
    """Turns one redis-py command (or a pipeline's commands) into cache metrics, for one cache name."""

    __slots__ = ("_cache", "_timers")

    def __init__(self, cache: CacheMetrics) -> None:
        self._cache = cache
        self._timers: dict[str, Callable[[float], None]] = {}

    def duration(self, command: str, seconds: float, error: BaseException | None) -> None:
        observe = self._timers.get(command) if error is None else None
        if observe is None:
            operation = command.lower() if command in _TIMED_COMMANDS else OTHER_COMMAND
            observe = self._cache._observer(operation, "" if error is None else type(error).__qualname__)
            if error is None:
                self._timers[command] = observe
        observe(seconds)

    def results(self, command: str, args: Sequence[Any], reply: Any) -> None:
        kind = _COMMANDS.get(command, _TIMED_ONLY)
        if not kind:
            return
        cache = self._cache
        if kind == _READ_ONE:
            if reply is None:
                cache.miss()
            else:
                cache.hit()
        elif kind == _READ_MANY:
            if isinstance(reply, list):
                misses = sum(1 for value in reply if value is None)
                if misses:
                    cache.miss(misses)
                if len(reply) > misses:
                    cache.hit(len(reply) - misses)
        elif kind == _READ_HASH:
            if reply:
                cache.hit()
            else:
                cache.miss()
        elif kind == _READ_DELETE:
            if reply is None:
                cache.miss()
            else:
                cache.hit()
                cache.evict()
        elif kind == _WRITE_ONE:
            if reply:
                cache.set()
        elif kind == _WRITE_ALWAYS:
            cache.set()
        elif kind == _WRITE_SET:
            if _set_wrote(args, reply):
                cache.set()
        elif kind == _WRITE_PAIRS:
            cache.set(max(0, (len(args) - 1) // 2))
        elif kind == _WRITE_PAIRS_ALL_OR_NONE:
            if reply:
                cache.set(max(0, (len(args) - 1) // 2))
        elif kind == _WRITE_FIELDS:
            cache.set(max(0, (len(args) - 2) // 2))
        elif kind == _DELETE_COUNT and isinstance(reply, int) and reply > 0:
            cache.evict(reply)


class _RedisState:
    """What the patched methods read: the registry and a recorder per cache name."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self.registry = registry
        self._by_db: dict[Any, _RedisRecorder] = {}
        self._warned = False

    def recorder(self, client: Any) -> _RedisRecorder:
        try:
            db = client.connection_pool.connection_kwargs.get("db", 0)
        except AttributeError:
            db = 0
        recorder = self._by_db.get(db)
        if recorder is None:
            recorder = self._by_db[db] = _RedisRecorder(get_cache_metrics(redis_cache_name(db), self.registry))
        return recorder

    def failed(self) -> None:
        if not self._warned:
            self._warned = True
            _logger.warning("could not record Redis cache metrics; commands are unaffected", exc_info=True)


def redis_cache_name(db: object) -> str:
    """The ``cache.name`` of a Redis database: ``redis`` for database 0, ``redis/<n>`` for the others."""
    return "redis" if db in (0, "0", None) else f"redis/{db}"


_state: _RedisState | None = None
_PATCHES = "_otel_monitoring_originals"


def _command_name(args: Sequence[Any]) -> str:
    if not args:
        return ""
    name = args[0]
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    name = str(name)
    return name if name in _TIMED_COMMANDS else name.upper()


def _record_command(client: Any, args: Sequence[Any], reply: Any, error: BaseException | None, seconds: float) -> None:
    state = _state
    if state is None:
        return
    try:
        recorder = state.recorder(client)
        command = _command_name(args)
        recorder.duration(command, seconds, error)
        if error is None:
            recorder.results(command, args, reply)
    except Exception:
        state.failed()


def _record_pipeline(
    client: Any, stack: Iterable[Any], replies: Any, error: BaseException | None, seconds: float
) -> None:
    state = _state
    if state is None:
        return
    try:
        recorder = state.recorder(client)
        recorder.duration(PIPELINE_COMMAND, seconds, error)
        if error is None and isinstance(replies, list):
            for command, reply in zip(stack, replies, strict=False):
                args = command[0] if isinstance(command, tuple) else getattr(command, "args", ())
                if not isinstance(reply, Exception):  # execute(raise_on_error=False) returns errors in place
                    recorder.results(_command_name(args), args, reply)
    except Exception:
        state.failed()


def _wrap_command(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def execute_command(self: Any, *args: Any, **options: Any) -> Any:
        start = time.perf_counter()
        try:
            reply = original(self, *args, **options)
        except BaseException as error:
            _record_command(self, args, None, error, time.perf_counter() - start)
            raise
        _record_command(self, args, reply, None, time.perf_counter() - start)
        return reply

    return execute_command


def _wrap_async_command(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def execute_command(self: Any, *args: Any, **options: Any) -> Any:
        start = time.perf_counter()
        try:
            reply = await original(self, *args, **options)
        except BaseException as error:
            _record_command(self, args, None, error, time.perf_counter() - start)
            raise
        _record_command(self, args, reply, None, time.perf_counter() - start)
        return reply

    return execute_command


def _wrap_pipeline(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        stack = list(self.command_stack)  # execute() empties it before returning
        start = time.perf_counter()
        try:
            replies = original(self, *args, **kwargs)
        except BaseException as error:
            _record_pipeline(self, stack, None, error, time.perf_counter() - start)
            raise
        if stack:
            _record_pipeline(self, stack, replies, None, time.perf_counter() - start)
        return replies

    return execute


def _wrap_async_pipeline(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        stack = list(self.command_stack)
        start = time.perf_counter()
        try:
            replies = await original(self, *args, **kwargs)
        except BaseException as error:
            _record_pipeline(self, stack, None, error, time.perf_counter() - start)
            raise
        if stack:
            _record_pipeline(self, stack, replies, None, time.perf_counter() - start)
        return replies

    return execute


def _patch_targets() -> list[tuple[type, str, Callable[[Callable[..., Any]], Callable[..., Any]]]]:
    """(class, method, wrapper) for every redis-py entry point that runs commands, each seen exactly once.

    ``Redis.execute_command`` runs single commands. A pipeline subclasses ``Redis`` but overrides
    ``execute_command`` to queue, so its commands are recorded by ``execute`` (one duration for the round
    trip, results per command); commands it runs at once while watching keys go through
    ``immediate_execute_command``, which does not call ``Redis.execute_command``.
    """
    try:
        import redis
        import redis.asyncio
    except ImportError:
        return []
    return [
        (redis.Redis, "execute_command", _wrap_command),
        (redis.client.Pipeline, "execute", _wrap_pipeline),
        (redis.client.Pipeline, "immediate_execute_command", _wrap_command),
        (redis.asyncio.Redis, "execute_command", _wrap_async_command),
        (redis.asyncio.client.Pipeline, "execute", _wrap_async_pipeline),
        (redis.asyncio.client.Pipeline, "immediate_execute_command", _wrap_async_command),
    ]


class RedisInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Cache metrics of every redis-py client, sync and asyncio; entry point ``otel_monitoring_redis``.

    Reads (``GET``, ``MGET`` per key, ``HGET``, ``HMGET`` per field, ``HGETALL``, ``GETEX``, ``GETDEL``) count
    hits and misses; writes (``SET``, ``SETEX``, ``MSET`` per key, ``HSET`` per field ...) count sets; ``DEL``,
    ``UNLINK`` and ``HDEL`` count the keys they removed as evictions. Every command's duration is recorded under
    its lower-case name (unknown commands as ``other``), a pipeline's as one ``pipeline`` operation.
    ``cache.name`` is ``redis`` for database 0 and ``redis/<n>`` for database n.

    >>> RedisInstrumentor().instrument()           # opentelemetry-instrument does this
    >>> RedisInstrumentor().instrument(registry=my_registry, settings=my_settings)
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("redis >= 5",)

    def _instrument(self, **kwargs: Any) -> None:
        global _state
        settings = kwargs.get("settings")
        if settings is None:
            from otel_monitoring import config

            settings = config.get_settings()
        if not settings.collectors.redis:
            return
        registry = kwargs.get("registry") or default_registry()
        _state = _RedisState(registry)
        for cls, method, wrap in _patch_targets():
            originals: dict[str, Any] = vars(cls).get(_PATCHES) or {}
            if method in originals:
                continue  # already patched: instrumenting twice never records twice
            originals[method] = vars(cls)[method]
            setattr(cls, _PATCHES, originals)
            setattr(cls, method, wrap(originals[method]))
        if registry is default_registry():
            from otel_monitoring.telemetry import start_if_exporting

            start_if_exporting()

    def _uninstrument(self, **kwargs: Any) -> None:
        global _state
        for cls, _method, _wrap in _patch_targets():
            originals = vars(cls).get(_PATCHES)
            if originals:
                for method, original in originals.items():
                    setattr(cls, method, original)
                delattr(cls, _PATCHES)
        _state = None
