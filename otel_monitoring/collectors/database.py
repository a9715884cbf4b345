"""SQLAlchemy query and connection-pool metrics, by the database semantic conventions.

https://opentelemetry.io/docs/specs/semconv/database/database-metrics/

- ``db.client.operation.duration`` (histogram, seconds) by ``db.system.name``, ``db.operation.name``,
  ``db.collection.name``, ``db.query.summary`` and, on failure, ``error.type`` (the DBAPI exception's
  class name, such as ``OperationalError``);
- ``db.client.operation.slow`` (counter, ours): operations that took at least
  ``collectors.slow_query_seconds``, by the same attributes;
- ``db.client.connection.count`` (by ``db.client.connection.state`` idle|used) and
  ``db.client.connection.max`` (UpDownCounters) by ``db.client.connection.pool.name``.

How it hooks in: SQLAlchemy's ``do_execute`` / ``do_execute_no_params`` / ``do_executemany`` dialect events.
A listener of these events performs the DBAPI call itself (and returns ``True``), so it times exactly the
span between ``before_cursor_execute`` and ``after_cursor_execute``, sees the DBAPI exception before SQLAlchemy
wraps it, and, because the first listener that executes stops the others, a statement is recorded once
however many times the engine was instrumented. The connection events (``before_cursor_execute`` and
friends) were the first design; merely switching them on costs about 2.6 µs per statement in SQLAlchemy
itself, a quarter of a trivial SQLite query (bench/database_overhead.py), so they are not used.

Summaries come from ``_sql_summary`` and are cached per statement string, so the hot path is one dict lookup,
two clock reads and one histogram cell update. Parameters are never read.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, Final

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.engine.default import DefaultDialect

from otel_monitoring._instruments import CounterFamily, HistogramFamily, MetricsRegistry, UpDownCounterFamily
from otel_monitoring.collectors._sql_summary import QuerySummary, SQLFlavor, flavor_for, summarize
from otel_monitoring.metrics import default_registry
from otel_monitoring.telemetry import start_if_exporting

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Dialect
    from sqlalchemy.engine.interfaces import DBAPICursor, ExecutionContext
    from sqlalchemy.pool import ConnectionPoolEntry, Pool

    from otel_monitoring.settings import CollectorsConfig

__all__ = [
    "DURATION_BUCKETS",
    "DatabaseMetrics",
    "EngineRecorder",
    "SQLAlchemyInstrumentor",
    "instrument_engine",
    "uninstrument_engine",
]

_logger = logging.getLogger(__name__)

# https://opentelemetry.io/docs/specs/semconv/database/database-metrics/#metric-dbclientoperationduration
DURATION_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
_OPERATION_ATTRIBUTES = ("db.system.name", "db.operation.name", "db.collection.name", "db.query.summary", "error.type")
_POOL_ATTRIBUTES = ("db.client.connection.pool.name", "db.client.connection.state")
_POOL_MAX_ATTRIBUTES = ("db.client.connection.pool.name",)
# Distinct statements whose cells one engine keeps; past it the oldest is forgotten (and parsed again if it
# comes back). Applications issue a bounded set of statements; this bounds the ones that are not.
STATEMENT_CACHE_SIZE: Final = 2048

# https://opentelemetry.io/docs/specs/semconv/registry/attributes/db/#db-system-name
_SYSTEM_NAMES = {
    "postgresql": "postgresql",
    "mysql": "mysql",
    "mariadb": "mariadb",
    "sqlite": "sqlite",
    "mssql": "microsoft.sql_server",
    "oracle": "oracle.db",
    "default": "other_sql",
}

_RECORDER_ATTRIBUTE = "_otel_monitoring_recorder"  # on the Dialect instance: the hot path reads it
_EXECUTE_EVENTS = ("do_execute", "do_execute_no_params", "do_executemany")
_POOL_EVENTS = ("connect", "checkout", "checkin", "close", "detach")


class DatabaseMetrics:
    """The database instruments of one registry, declared once and shared by every engine recording into it."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self.registry = registry
        self.duration: HistogramFamily = registry.semconv_histogram(
            "db.client.operation.duration",
            "Duration of database client operations.",
            _OPERATION_ATTRIBUTES,
            "s",
            DURATION_BUCKETS,
        )
        self.slow: CounterFamily = registry.semconv_counter(
            "db.client.operation.slow",
            "Database client operations that took at least the slow-query threshold (otel-monitoring).",
            _OPERATION_ATTRIBUTES,
            "{operation}",
        )
        self.connections: UpDownCounterFamily = registry.semconv_updowncounter(
            "db.client.connection.count",
            "The number of connections that are currently in the state described by the state attribute.",
            _POOL_ATTRIBUTES,
            "{connection}",
        )
        self.connections_max: UpDownCounterFamily = registry.semconv_updowncounter(
            "db.client.connection.max",
            "The maximum number of open connections allowed.",
            _POOL_MAX_ATTRIBUTES,
            "{connection}",
        )
        self.pool_trackers: dict[str, int] = {}  # pool name -> engines tracking a pool of that name


_metrics_by_registry: weakref.WeakKeyDictionary[MetricsRegistry, DatabaseMetrics] = weakref.WeakKeyDictionary()
_lock = threading.RLock()


def _metrics_for(registry: MetricsRegistry) -> DatabaseMetrics:
    with _lock:
        metrics = _metrics_by_registry.get(registry)
        if metrics is None:
            metrics = _metrics_by_registry[registry] = DatabaseMetrics(registry)
        return metrics


def system_name(dialect: Dialect) -> str:
    """``db.system.name`` for a SQLAlchemy dialect: the well-known value, else the dialect's name."""
    if getattr(dialect, "is_mariadb", False):
        return "mariadb"
    return _SYSTEM_NAMES.get(dialect.name, dialect.name.lower())


class EngineRecorder:
    """Records the statements of one engine (one SQLAlchemy dialect instance) into a registry.

    Built by :func:`instrument_engine` or, for every engine, by :class:`SQLAlchemyInstrumentor`.
    """

    # Hot path state: slots, and the statement cache maps straight to bound cell methods.
    __slots__ = (
        "__weakref__",
        "_batch_cells",
        "_cells",
        "_flavor",
        "_system",
        "clock",
        "default_execute",
        "dialect_execute",
        "dialect_execute_no_params",
        "dialect_executemany",
        "explicit",
        "metrics",
        "pools",
        "slow_seconds",
    )

    def __init__(
        self,
        dialect: Dialect,
        metrics: DatabaseMetrics,
        *,
        slow_seconds: float,
        clock: Callable[[], float],
        explicit: bool,
    ) -> None:
        self.metrics = metrics
        self.slow_seconds = slow_seconds
        self.clock = clock
        self.explicit = explicit
        self._system = system_name(dialect)
        self._flavor: SQLFlavor = flavor_for("mariadb" if self._system == "mariadb" else dialect.name)
        # statement -> (observe, inc of the slow counter, attribute values without error.type)
        self._cells: dict[str, tuple[Callable[[float], None], Callable[[], None], tuple[str, ...]]] = {}
        self._batch_cells: dict[str, tuple[Callable[[float], None], Callable[[], None], tuple[str, ...]]] = {}
        # The dialect's own methods, called by the listeners. DefaultDialect.do_execute is exactly
        # cursor.execute(statement, parameters): calling the cursor directly saves a Python frame per statement.
        self.default_execute = type(dialect).do_execute is DefaultDialect.do_execute
        self.dialect_execute = dialect.do_execute
        self.dialect_execute_no_params = dialect.do_execute_no_params
        self.dialect_executemany = dialect.do_executemany
        self.pools: list[_PoolUsage] = []

    def cells(
        self, statement: str, *, batch: bool = False
    ) -> tuple[Callable[[float], None], Callable[[], None], tuple[str, ...]]:
        """The bound cells for a statement: its summary is computed once, then looked up."""
        cache = self._batch_cells if batch else self._cells
        cells = cache.get(statement)
        if cells is None:
            values = self.attribute_values(statement, batch=batch)
            cells = (
                self.metrics.duration.labels(*values, "").observe,
                self.metrics.slow.labels(*values, "").inc,
                values,
            )
            if len(cache) >= STATEMENT_CACHE_SIZE:
                cache.pop(next(iter(cache)), None)  # the oldest: dicts keep insertion order
            cache[statement] = cells
        return cells

    def attribute_values(self, statement: str, *, batch: bool = False) -> tuple[str, str, str, str]:
        """``db.system.name``, ``db.operation.name``, ``db.collection.name`` and ``db.query.summary``."""
        try:
            summary = summarize(statement, self._flavor)
        except Exception:
            _log_once("could not summarize a statement; recording it without a summary")
            summary = QuerySummary("", "", "")
        operation, query_summary = summary.operation, summary.summary
        if batch:
            # https://opentelemetry.io/docs/specs/semconv/database/database-spans/ (db.operation.batch.size)
            operation = f"BATCH {operation}" if operation else "BATCH"
            query_summary = f"BATCH {query_summary}" if query_summary else "BATCH"
        return (self._system, operation, summary.collection, query_summary)

    def record_error(self, statement: str, error: BaseException, elapsed: float, *, batch: bool = False) -> None:
        """Record a failed operation; never raises (the application's exception must come out unchanged)."""
        try:
            cached = (self._batch_cells if batch else self._cells).get(statement)
            values = cached[2] if cached is not None else self.attribute_values(statement, batch=batch)
            error_type = type(error).__name__
            self.metrics.duration.labels(*values, error_type).observe(elapsed)
            if elapsed >= self.slow_seconds:
                self.metrics.slow.labels(*values, error_type).inc()
        except Exception:
            _log_once("could not record a failed database operation")


def _log_once(message: str, _logged: set[str] = set()) -> None:  # noqa: B006 - the set is the memory
    if message not in _logged:
        _logged.add(message)
        _logger.warning("otel-monitoring: %s", message, exc_info=True)


# --- The listeners. One function per event serves every engine: it finds the recorder on the dialect. ---
# Hot path, written for speed on purpose: attribute reads on slotted objects, local variables, no allocation
# besides the float of the elapsed time; the statement's cells are found by one dict lookup.


def _recorder_of(context: ExecutionContext | None) -> EngineRecorder | None:
    try:
        return getattr(context.dialect, _RECORDER_ATTRIBUTE)  # type: ignore[union-attr, no-any-return]
    except AttributeError:
        return _adopt(context)


def _on_do_execute(cursor: DBAPICursor, statement: str, parameters: Any, context: ExecutionContext | None) -> bool:
    try:
        # The attribute name is _RECORDER_ATTRIBUTE, written out: an attribute read is cheaper than getattr().
        recorder: EngineRecorder = context.dialect._otel_monitoring_recorder  # type: ignore[union-attr]
    except AttributeError:
        recorder = _adopt(context)  # type: ignore[assignment]
        if recorder is None:
            return False  # SQLAlchemy executes it as usual
    clock = recorder.clock
    start = clock()
    try:
        if recorder.default_execute:
            cursor.execute(statement, parameters)
        else:
            recorder.dialect_execute(cursor, statement, parameters, context)
    except BaseException as error:
        recorder.record_error(statement, error, clock() - start)
        raise
    elapsed = clock() - start
    try:
        # Looked up after the call, so the lookup is not timed and a failed statement binds no success series.
        cells = recorder._cells.get(statement) or recorder.cells(statement)
        cells[0](elapsed)
        if elapsed >= recorder.slow_seconds:
            cells[1]()
    except Exception:
        _log_once("could not record a database operation")  # the statement ran; its result must be returned
    return True


def _on_do_execute_no_params(cursor: DBAPICursor, statement: str, context: ExecutionContext | None) -> bool:
    recorder = _recorder_of(context)
    if recorder is None:
        return False
    start = recorder.clock()
    try:
        recorder.dialect_execute_no_params(cursor, statement, context)
    except BaseException as error:
        recorder.record_error(statement, error, recorder.clock() - start)
        raise
    _record(recorder, statement, recorder.clock() - start, batch=False)
    return True


def _on_do_executemany(cursor: DBAPICursor, statement: str, parameters: Any, context: ExecutionContext | None) -> bool:
    # One executemany() call is one recorded operation, whatever the number of parameter sets. With two or
    # more it is a batch: the conventions prefix its operation name and summary with "BATCH ".
    recorder = _recorder_of(context)
    if recorder is None:
        return False
    batch = len(parameters) > 1 if hasattr(parameters, "__len__") else True
    start = recorder.clock()
    try:
        recorder.dialect_executemany(cursor, statement, parameters, context)
    except BaseException as error:
        recorder.record_error(statement, error, recorder.clock() - start, batch=batch)
        raise
    _record(recorder, statement, recorder.clock() - start, batch=batch)
    return True


def _record(recorder: EngineRecorder, statement: str, elapsed: float, *, batch: bool) -> None:
    try:
        cells = recorder.cells(statement, batch=batch)
        cells[0](elapsed)
        if elapsed >= recorder.slow_seconds:
            cells[1]()
    except Exception:
        _log_once("could not record a database operation")


_LISTENERS: dict[str, Callable[..., bool]] = {
    "do_execute": _on_do_execute,
    "do_execute_no_params": _on_do_execute_no_params,
    "do_executemany": _on_do_executemany,
}


# --- Connection pools ---


_IDLE, _USED = "idle", "used"


class _PoolUsage:
    """Idle and used connections of one pool, kept by pool events.

    Each connection's state is stored in its pool entry's ``info`` under this object, so an event only moves
    a connection that this tracker counted; connections opened before tracking started are counted from
    their next checkout or checkin. SQLAlchemy clears ``info`` when it replaces a connection, after the
    ``close`` event that uncounted it. Checkout and checkin run once per ``engine.connect()``: they are
    written for speed (bound cell methods, one dict read and write each).
    """

    def __init__(self, name: str, metrics: DatabaseMetrics, pool: Pool) -> None:
        self.name = name
        self.active = True
        self._metrics = metrics
        self._idle = metrics.connections.labels(name, _IDLE).add
        self._used = metrics.connections.labels(name, _USED).add
        self._max = _pool_max(pool)
        if self._max:
            metrics.connections_max.labels(name).add(self._max)
        metrics.pool_trackers[name] = metrics.pool_trackers.get(name, 0) + 1
        self._pool = weakref.ref(pool)

    def connect(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        if self.active:
            self._set(record, _IDLE)

    def checkout(self, dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        if self.active:
            self._set(record, _USED)

    def checkin(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # A connection invalidated while checked out was closed already (and uncounted); it comes back empty.
        if self.active:
            self._set(record, _IDLE if dbapi_connection is not None else None)

    def close(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        if self.active:
            self._set(record, None)

    def detach(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        if self.active:
            self._set(record, None)  # no longer the pool's

    def _set(self, record: ConnectionPoolEntry, state: str | None) -> None:
        try:
            info = record.info
            previous = info.get(self)
            if previous is state:
                return
            if state is None:
                del info[self]
            else:
                info[self] = state
            if previous is not None:
                (self._idle if previous is _IDLE else self._used)(-1)
            if state is not None:
                (self._idle if state is _IDLE else self._used)(1)
        except Exception:
            _log_once("could not track a pooled connection")

    def stop(self) -> None:
        """Stop counting and remove the listeners; the pool's series go when no other engine shares its name."""
        if not self.active:
            return
        self.active = False
        metrics, name = self._metrics, self.name
        with _lock:
            if self._max:
                metrics.connections_max.labels(name).add(-self._max)
            remaining = metrics.pool_trackers.get(name, 1) - 1
            metrics.pool_trackers[name] = remaining
            if remaining <= 0:
                del metrics.pool_trackers[name]
                metrics.connections.remove(name, _IDLE)
                metrics.connections.remove(name, _USED)
                metrics.connections_max.remove(name)
        pool = self._pool()
        if pool is not None:
            for event_name in _POOL_EVENTS:
                listener = getattr(self, event_name)
                if event.contains(pool, event_name, listener):
                    event.remove(pool, event_name, listener)


def _pool_max(pool: Pool) -> int:
    # QueuePool (and the asyncio one) bound connections at size + max_overflow; a negative max_overflow is no
    # bound. SingletonThreadPool, StaticPool and NullPool have no maximum to report.
    size = getattr(pool, "size", None)
    overflow = getattr(pool, "_max_overflow", None)
    if not callable(size) or not isinstance(overflow, int) or overflow < 0:
        return 0
    total = size()
    return total + overflow if isinstance(total, int) else 0


def pool_name(url: URL) -> str:
    """``db.client.connection.pool.name``: ``host:port/database`` from the engine URL, without credentials.

    SQLAlchemy pools have no name, so the conventions' fallback is used; SQLite gives its file path, or
    ``:memory:``.
    """
    host = url.host or ""
    if host and url.port:
        host = f"{host}:{url.port}"
    database = url.database or ""
    if host:
        return f"{host}/{database}" if database else host
    return database or ":memory:"


def _track_pool(engine: Engine, metrics: DatabaseMetrics) -> _PoolUsage:
    pool = engine.pool
    usage = _PoolUsage(pool_name(engine.url), metrics, pool)
    # Listeners on the pool object survive engine.dispose(), which recreates the pool with the same dispatch.
    for name in _POOL_EVENTS:
        event.listen(pool, name, getattr(usage, name))
    return usage


# --- Per engine ---


def _sync_engine(engine: Any) -> Engine:
    sync_engine = getattr(engine, "sync_engine", engine)  # an AsyncEngine wraps a sync Engine
    if not isinstance(sync_engine, Engine):
        raise TypeError(f"instrument_engine: expected a SQLAlchemy Engine or AsyncEngine, got {type(engine).__name__}")
    return sync_engine


def instrument_engine(
    engine: Any,
    *,
    registry: MetricsRegistry | None = None,
    slow_query_seconds: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> EngineRecorder:
    """Record the queries and pool usage of one engine (``Engine`` or ``AsyncEngine``).

    Idempotent: a second call returns the first recorder and changes nothing, so no query is counted twice.
    An engine instrumented here keeps this registry and threshold even when :class:`SQLAlchemyInstrumentor`
    is active too. ``slow_query_seconds`` defaults to ``collectors.slow_query_seconds``; 0 counts every query.

    >>> engine = create_engine("sqlite:///app.db")
    >>> instrument_engine(engine)
    >>> with engine.connect() as connection:
    ...     connection.execute(text("SELECT 1"))  # db.client.operation.duration{db.query.summary="SELECT"}
    """
    sync_engine = _sync_engine(engine)
    dialect = sync_engine.dialect
    with _lock:
        existing: EngineRecorder | None = dialect.__dict__.get(_RECORDER_ATTRIBUTE)
        if existing is not None and existing.explicit:
            return existing
        if registry is None or slow_query_seconds is None:
            from otel_monitoring import config

            registry = registry or default_registry()
            if slow_query_seconds is None:
                slow_query_seconds = config.get_settings().collectors.slow_query_seconds
        if slow_query_seconds < 0:
            raise ValueError(f"instrument_engine: slow_query_seconds must be >= 0 (got {slow_query_seconds})")
        metrics = _metrics_for(registry)
        recorder = EngineRecorder(dialect, metrics, slow_seconds=slow_query_seconds, clock=clock, explicit=True)
        if existing is not None:  # adopted by the global instrumentor: this engine's own settings take over
            for usage in existing.pools:
                usage.stop()
            _global_adopted.discard(dialect)
        setattr(dialect, _RECORDER_ATTRIBUTE, recorder)
        recorder.pools.append(_track_pool(sync_engine, metrics))
        for name, listener in _LISTENERS.items():
            if not event.contains(sync_engine, name, listener):
                event.listen(sync_engine, name, listener)
    if registry is default_registry():
        start_if_exporting()
    return recorder


def uninstrument_engine(engine: Any) -> None:
    """Stop recording an engine instrumented by :func:`instrument_engine` (the global instrumentor may still)."""
    sync_engine = _sync_engine(engine)
    dialect = sync_engine.dialect
    with _lock:
        recorder: EngineRecorder | None = dialect.__dict__.get(_RECORDER_ATTRIBUTE)
        if recorder is None or not recorder.explicit:
            return
        for name, listener in _LISTENERS.items():
            if event.contains(sync_engine, name, listener):
                event.remove(sync_engine, name, listener)
        for usage in recorder.pools:
            usage.stop()
        delattr(dialect, _RECORDER_ATTRIBUTE)


# --- Every engine: the zero-code instrumentor ---


class _GlobalState:
    def __init__(self, metrics: DatabaseMetrics, slow_seconds: float, clock: Callable[[], float]) -> None:
        self.metrics = metrics
        self.slow_seconds = slow_seconds
        self.clock = clock


_global: _GlobalState | None = None
_global_adopted: weakref.WeakSet[Any] = weakref.WeakSet()  # dialects the global instrumentor gave a recorder


def _adopt(context: ExecutionContext | None) -> EngineRecorder | None:
    """First statement of an engine the global instrumentor has not seen: give its dialect a recorder."""
    state = _global
    if state is None or context is None:
        return None
    try:
        with _lock:
            dialect = context.dialect
            recorder: EngineRecorder | None = dialect.__dict__.get(_RECORDER_ATTRIBUTE)
            if recorder is None:
                recorder = EngineRecorder(
                    dialect, state.metrics, slow_seconds=state.slow_seconds, clock=state.clock, explicit=False
                )
                engine = context.root_connection.engine
                # Pool usage is tracked from here: connections opened earlier count from their next checkin.
                recorder.pools.append(_track_pool(engine, state.metrics))
                setattr(dialect, _RECORDER_ATTRIBUTE, recorder)
                _global_adopted.add(dialect)
            return recorder
    except Exception:
        _log_once("could not instrument a SQLAlchemy engine; its queries are not recorded")
        return None


class SQLAlchemyInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """``opentelemetry_instrumentor`` entry point ``otel_monitoring_sqlalchemy``: every engine of the process.

    Listens on the ``Engine`` class, so engines created before and after :meth:`instrument` are covered; each
    engine is set up at its first statement. Off when ``collectors.database`` is false. Works beside
    opentelemetry-instrumentation-sqlalchemy (which makes spans) without counting any query twice, and beside
    :func:`instrument_engine` (an engine instrumented by hand keeps its own registry and threshold).

    >>> SQLAlchemyInstrumentor().instrument()
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("sqlalchemy >= 2.0",)

    def _instrument(self, **kwargs: Any) -> None:
        global _global
        collectors: CollectorsConfig | None = kwargs.get("collectors")
        if collectors is None:
            from otel_monitoring import config

            collectors = config.get_settings().collectors
        if not collectors.database:
            return
        registry: MetricsRegistry = kwargs.get("registry") or default_registry()
        slow = kwargs.get("slow_query_seconds", collectors.slow_query_seconds)
        with _lock:
            if _global is not None:
                return
            _global = _GlobalState(_metrics_for(registry), slow, kwargs.get("clock", time.perf_counter))
            for name, listener in _LISTENERS.items():
                event.listen(Engine, name, listener)
        if registry is default_registry():
            start_if_exporting()

    def _uninstrument(self, **kwargs: Any) -> None:
        global _global
        with _lock:
            if _global is None:
                return
            _global = None
            for name, listener in _LISTENERS.items():
                if event.contains(Engine, name, listener):
                    event.remove(Engine, name, listener)
            for dialect in list(_global_adopted):
                recorder: EngineRecorder | None = dialect.__dict__.get(_RECORDER_ATTRIBUTE)
                if recorder is not None and not recorder.explicit:
                    for usage in recorder.pools:
                        usage.stop()
                    delattr(dialect, _RECORDER_ATTRIBUTE)
            _global_adopted.clear()
