"""SQLAlchemy query and connection-pool metrics, by the database semantic conventions.

https://opentelemetry.io/docs/specs/semconv/database/database-metrics/

- ``db.client.operation.duration`` (histogram, seconds) by ``db.system.name``, ``db.operation.name``,
  ``db.collection.name``, ``db.query.summary`` and, on failure, ``error.type`` (the DBAPI exception's
  class name, such as ``OperationalError``);
- ``db.client.operation.slow`` (counter, ours): operations that took at least
  ``collectors.slow_query_seconds``, by the same attributes;
- ``db.client.connection.count`` (by ``db.client.connection.state`` idle|used) and
  ``db.client.connection.max`` (UpDownCounters) by ``db.client.connection.pool.name``.

How it hooks in: each instrumented engine's dialect gets instance attributes ``do_execute``,
``do_execute_no_params`` and ``do_executemany`` that time the dialect's own methods. SQLAlchemy calls these
for every DBAPI execution, after running any ``do_execute`` event listeners (and only if none of them
executed the statement), so the wrapper times exactly the DBAPI call, sees the DBAPI exception before
SQLAlchemy wraps it, and one recorder per dialect means a statement is recorded once. The dialect events
themselves were the previous design: SQLAlchemy's dispatch of them alone costs about 0.24 µs per statement,
and the connection events (``before_cursor_execute`` and friends) about 2.6 µs, against a trivial SQLite
query of about 10 µs (bench/database_overhead.py).

Summaries come from ``_sql_summary`` and are cached per statement string, so the hot path is one dict lookup,
two clock reads and one histogram cell update. Parameters are never read.
"""

from __future__ import annotations

import functools
import importlib
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
    from sqlalchemy.engine.interfaces import DBAPICursor
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

_RECORDER_ATTRIBUTE = "_otel_monitoring_recorder"  # on the Dialect instance: its recorder
_WRAPPED_METHODS = ("do_execute", "do_execute_no_params", "do_executemany")
_ABSENT: Final = object()  # the dialect had no instance attribute of that name (the class's method was used)
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

    Built by :func:`instrument_engine` or, for every new engine, by :class:`SQLAlchemyInstrumentor`.
    """

    # Hot path state: slots, and the statement cache maps straight to bound cell methods.
    __slots__ = (
        "__weakref__",
        "_batch_cells",
        "_cells",
        "_flavor",
        "_originals",
        "_system",
        "_wrappers",
        "active",
        "clock",
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
        self.active = False
        self._system = system_name(dialect)
        self._flavor: SQLFlavor = flavor_for("mariadb" if self._system == "mariadb" else dialect.name)
        # statement -> (observe, inc of the slow counter, attribute values without error.type)
        self._cells: dict[str, tuple[Callable[[float], None], Callable[[], None], tuple[str, ...]]] = {}
        self._batch_cells: dict[str, tuple[Callable[[float], None], Callable[[], None], tuple[str, ...]]] = {}
        self._originals: dict[str, Any] = {}  # method name -> the dialect's instance attribute before us, or _ABSENT
        self._wrappers: dict[str, Callable[..., Any]] = {}
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

    def record(self, statement: str, elapsed: float, *, batch: bool = False) -> None:
        """Record a successful operation; never raises (the statement ran, its result must be returned)."""
        try:
            cells = self.cells(statement, batch=batch)
            cells[0](elapsed)
            if elapsed >= self.slow_seconds:
                cells[1]()
        except Exception:
            _log_once("could not record a database operation")

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

    def attach(self, dialect: Dialect) -> None:
        """Put the timing wrappers on the dialect instance (the caller holds ``_lock``)."""
        instance = dialect.__dict__
        self._originals = {name: instance.get(name, _ABSENT) for name in _WRAPPED_METHODS}
        # DefaultDialect.do_execute is exactly cursor.execute(statement, parameters), and do_execute_no_params
        # cursor.execute(statement): when the dialect keeps them, the wrapper calls the cursor directly, so the
        # wrapper's Python frame replaces the dialect method's instead of adding one per statement.
        self._wrappers = {
            "do_execute": _wrap_do_execute(self, dialect.do_execute, direct=_keeps_default(dialect, "do_execute")),
            "do_execute_no_params": _wrap_do_execute_no_params(
                self, dialect.do_execute_no_params, direct=_keeps_default(dialect, "do_execute_no_params")
            ),
            "do_executemany": _wrap_do_executemany(self, dialect.do_executemany),
        }
        self.active = True
        for name, wrapper in self._wrappers.items():
            setattr(dialect, name, wrapper)
        setattr(dialect, _RECORDER_ATTRIBUTE, self)

    def detach(self, dialect: Dialect) -> None:
        """Give the dialect its methods back exactly as they were, and stop the pool tracking (holds ``_lock``).

        A method that something else wrapped after us cannot be taken out of its chain: our wrapper stays
        there and, inactive, only calls through.
        """
        self.active = False
        instance = dialect.__dict__
        for name, wrapper in self._wrappers.items():
            if instance.get(name) is not wrapper:
                continue
            original = self._originals.get(name, _ABSENT)
            if original is _ABSENT:
                delattr(dialect, name)
            else:
                setattr(dialect, name, original)
        if instance.get(_RECORDER_ATTRIBUTE) is self:
            delattr(dialect, _RECORDER_ATTRIBUTE)
        for usage in self.pools:
            usage.stop()


def _keeps_default(dialect: Dialect, name: str) -> bool:
    return name not in dialect.__dict__ and getattr(type(dialect), name) is getattr(DefaultDialect, name)


def _log_once(message: str, _logged: set[str] = set()) -> None:  # noqa: B006 - the set is the memory
    if message not in _logged:
        _logged.add(message)
        _logger.warning("otel-monitoring: %s", message, exc_info=True)


# --- The wrappers of the dialect's execute methods ---
# Hot path, written for speed on purpose: everything the call needs is a closure variable (no attribute
# lookup but `active`), no allocation besides the float of the elapsed time, and the statement's cells are
# found by one dict lookup after the call returns (so the lookup is not timed, and a statement that only
# fails binds no success series). The signatures are the dialect methods' own.


def _wrap_do_execute(recorder: EngineRecorder, original: Callable[..., Any], *, direct: bool) -> Callable[..., Any]:
    clock = recorder.clock
    cached = recorder._cells.get  # the dict is only ever mutated, never replaced
    slow_seconds = recorder.slow_seconds
    record_error = recorder.record_error

    def do_execute(cursor: DBAPICursor, statement: str, parameters: Any, context: Any = None) -> Any:
        if not recorder.active:
            return original(cursor, statement, parameters, context)
        start = clock()
        try:
            if direct:
                cursor.execute(statement, parameters)
                result = None
            else:
                result = original(cursor, statement, parameters, context)
        except BaseException as error:
            record_error(statement, error, clock() - start)
            raise
        elapsed = clock() - start
        try:
            cells = cached(statement) or recorder.cells(statement)
            cells[0](elapsed)
            if elapsed >= slow_seconds:
                cells[1]()
        except Exception:
            _log_once("could not record a database operation")  # the statement ran; its result must be returned
        return result

    return do_execute


def _wrap_do_execute_no_params(
    recorder: EngineRecorder, original: Callable[..., Any], *, direct: bool
) -> Callable[..., Any]:
    # The path of a statement without parameters, such as text("SELECT 1"): as lean as do_execute's.
    clock = recorder.clock
    cached = recorder._cells.get
    slow_seconds = recorder.slow_seconds
    record_error = recorder.record_error

    def do_execute_no_params(cursor: DBAPICursor, statement: str, context: Any = None) -> Any:
        if not recorder.active:
            return original(cursor, statement, context)
        start = clock()
        try:
            if direct:
                cursor.execute(statement)
                result = None
            else:
                result = original(cursor, statement, context)
        except BaseException as error:
            record_error(statement, error, clock() - start)
            raise
        elapsed = clock() - start
        try:
            cells = cached(statement) or recorder.cells(statement)
            cells[0](elapsed)
            if elapsed >= slow_seconds:
                cells[1]()
        except Exception:
            _log_once("could not record a database operation")
        return result

    return do_execute_no_params


def _wrap_do_executemany(recorder: EngineRecorder, original: Callable[..., Any]) -> Callable[..., Any]:
    clock = recorder.clock

    def do_executemany(cursor: DBAPICursor, statement: str, parameters: Any, context: Any = None) -> Any:
        # One executemany() call is one recorded operation, whatever the number of parameter sets. With two or
        # more it is a batch: the conventions prefix its operation name and summary with "BATCH ".
        if not recorder.active:
            return original(cursor, statement, parameters, context)
        batch = len(parameters) > 1 if hasattr(parameters, "__len__") else True
        start = clock()
        try:
            result = original(cursor, statement, parameters, context)
        except BaseException as error:
            recorder.record_error(statement, error, clock() - start, batch=batch)
            raise
        recorder.record(statement, clock() - start, batch=batch)
        return result

    return do_executemany


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

    # checkout and checkin run once per engine.connect(): their common move (a counted connection going
    # between idle and used) is written out; anything else goes through _set.

    def checkout(self, dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        if self.active:
            info = record.info
            if info.get(self) is _IDLE:
                info[self] = _USED
                self._idle(-1)
                self._used(1)
            else:
                self._set(record, _USED)

    def checkin(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # A connection invalidated while checked out was closed already (and uncounted); it comes back empty.
        if self.active:
            info = record.info
            if dbapi_connection is not None and info.get(self) is _USED:
                info[self] = _IDLE
                self._used(-1)
                self._idle(1)
            else:
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
    Engines created before :class:`SQLAlchemyInstrumentor` was started are covered only this way.

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
        if existing is not None:  # set up by the global instrumentor: this engine's own settings take over
            existing.detach(dialect)
            _global_adopted.discard(dialect)
        recorder = _attach(sync_engine, _metrics_for(registry), slow_query_seconds, clock, explicit=True)
    if registry is default_registry():
        start_if_exporting()
    return recorder


def _attach(
    engine: Engine, metrics: DatabaseMetrics, slow_seconds: float, clock: Callable[[], float], *, explicit: bool
) -> EngineRecorder:
    dialect = engine.dialect
    recorder = EngineRecorder(dialect, metrics, slow_seconds=slow_seconds, clock=clock, explicit=explicit)
    recorder.pools.append(_track_pool(engine, metrics))
    recorder.attach(dialect)
    return recorder


def uninstrument_engine(engine: Any) -> None:
    """Stop recording an engine instrumented by :func:`instrument_engine`; its dialect gets its methods back."""
    dialect = _sync_engine(engine).dialect
    with _lock:
        recorder: EngineRecorder | None = dialect.__dict__.get(_RECORDER_ATTRIBUTE)
        if recorder is not None and recorder.explicit:
            recorder.detach(dialect)


# --- New engines: the zero-code instrumentor ---


class _GlobalState:
    def __init__(self, metrics: DatabaseMetrics, slow_seconds: float, clock: Callable[[], float]) -> None:
        self.metrics = metrics
        self.slow_seconds = slow_seconds
        self.clock = clock
        self.patches: list[tuple[Any, str, Callable[..., Any], Callable[..., Any]]] = []  # module, name, was, ours


_global: _GlobalState | None = None
_global_adopted: weakref.WeakSet[Any] = weakref.WeakSet()  # dialects the global instrumentor gave a recorder

# Where SQLAlchemy's engine constructors are reachable by name: each name is a separate module attribute,
# bound by `from ... import` at import time, so each is replaced. create_async_engine calls the sync
# create_engine through a private alias taken at import, so it is wrapped as well.
_CONSTRUCTORS = (
    ("sqlalchemy", "create_engine"),
    ("sqlalchemy.engine", "create_engine"),
    ("sqlalchemy.engine.create", "create_engine"),
    ("sqlalchemy.ext.asyncio", "create_async_engine"),
    ("sqlalchemy.ext.asyncio.engine", "create_async_engine"),
)


def _adopt(engine: Any) -> None:
    """A new engine made while the global instrumentor runs: record it, unless it already is."""
    state = _global
    if state is None:
        return
    try:
        sync_engine = _sync_engine(engine)
        dialect = sync_engine.dialect
        with _lock:
            if _RECORDER_ATTRIBUTE not in dialect.__dict__:
                _attach(sync_engine, state.metrics, state.slow_seconds, state.clock, explicit=False)
                _global_adopted.add(dialect)
    except Exception:
        _log_once("could not instrument a SQLAlchemy engine; its queries are not recorded")


def _wrap_constructor(constructor: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(constructor)
    def create(*args: Any, **kwargs: Any) -> Any:
        engine = constructor(*args, **kwargs)
        _adopt(engine)
        return engine

    return create


def _patch_constructors(state: _GlobalState) -> None:
    for module_name, name in _CONSTRUCTORS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # sqlalchemy.ext.asyncio may be unimportable in a stripped-down install
            continue
        constructor = getattr(module, name, None)
        if callable(constructor):
            wrapper = _wrap_constructor(constructor)
            setattr(module, name, wrapper)
            state.patches.append((module, name, constructor, wrapper))


def _unpatch_constructors(state: _GlobalState) -> None:
    for module, name, constructor, wrapper in reversed(state.patches):
        # Something that wrapped ours since keeps its wrapper; ours then only calls through (no _global).
        if getattr(module, name, None) is wrapper:
            setattr(module, name, constructor)
    state.patches.clear()


class SQLAlchemyInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """``opentelemetry_instrumentor`` entry point ``otel_monitoring_sqlalchemy``: every new engine of the process.

    Wraps SQLAlchemy's ``create_engine`` and ``create_async_engine`` (each name they are imported under), so
    every engine created after :meth:`instrument` is recorded from its creation. Under
    ``opentelemetry-instrument`` that is before the application imports SQLAlchemy, so
    ``from sqlalchemy import create_engine`` gets the wrapped function. Engines created before are not
    discovered: :func:`instrument_engine` covers them. Off when ``collectors.database`` is false. Works beside
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
            state = _GlobalState(_metrics_for(registry), slow, kwargs.get("clock", time.perf_counter))
            _patch_constructors(state)
            _global = state
        if registry is default_registry():
            start_if_exporting()

    def _uninstrument(self, **kwargs: Any) -> None:
        global _global
        with _lock:
            state = _global
            if state is None:
                return
            _global = None
            _unpatch_constructors(state)
            for dialect in list(_global_adopted):
                recorder: EngineRecorder | None = dialect.__dict__.get(_RECORDER_ATTRIBUTE)
                if recorder is not None and not recorder.explicit:
                    recorder.detach(dialect)
            _global_adopted.clear()
