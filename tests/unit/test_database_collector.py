"""SQLAlchemy query and pool metrics on real SQLite: counted exactly, summarized, never a literal or a parameter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor as ContribSQLAlchemyInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import (
    Column,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from otel_monitoring._cells import CounterCell, HistogramCell, UpDownCounterCell
from otel_monitoring.collectors.database import (
    DURATION_BUCKETS,
    SQLAlchemyInstrumentor,
    instrument_engine,
    uninstrument_engine,
)
from otel_monitoring.exporter import render_exposition
from otel_monitoring.metrics import HistogramFamily, MetricsRegistry
from otel_monitoring.settings import CollectorsConfig, load_settings
from otel_monitoring.telemetry import Telemetry

DURATION, SLOW = "db.client.operation.duration", "db.client.operation.slow"

metadata = MetaData()
users = Table("users", metadata, Column("id", Integer, primary_key=True), Column("name", String))
orders = Table(
    "orders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", ForeignKey("users.id")),
    Column("item", String),
)


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]


def durations(registry: MetricsRegistry, **attributes: Any) -> int:
    """How many operations the duration histogram counted, over the series matching ``attributes``."""
    family = registry.get(DURATION)
    if family is None:
        return 0
    total = 0
    for series in family.series():
        if all(series.attributes.get(key) == value for key, value in attributes.items()):
            assert isinstance(series.cell, HistogramCell)
            total += sum(series.cell.snapshot()[0])
    return total


def _sum_of(registry: MetricsRegistry, name: str, **attributes: Any) -> float:
    family = registry.get(name)
    assert family is not None
    total = 0.0
    for series in family.series():
        if all(series.attributes.get(key) == value for key, value in attributes.items()):
            assert isinstance(series.cell, CounterCell | UpDownCounterCell)
            total += series.cell.get()
    return total


def slow_count(registry: MetricsRegistry, **attributes: Any) -> float:
    return _sum_of(registry, SLOW, **attributes)


def all_attribute_values(registry: MetricsRegistry) -> list[str]:
    return [str(value) for family in registry.families() for s in family.series() for value in s.attributes.values()]


def connections(registry: MetricsRegistry, state: str) -> float:
    return _sum_of(registry, "db.client.connection.count", **{"db.client.connection.state": state})


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    metadata.create_all(engine)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def registry() -> MetricsRegistry:
    return MetricsRegistry()


@pytest.fixture
def global_instrumentor() -> Iterator[SQLAlchemyInstrumentor]:
    instrumentor = SQLAlchemyInstrumentor()
    yield instrumentor
    instrumentor.uninstrument()


def test_counts_every_execute_exactly(engine: Engine, registry: MetricsRegistry) -> None:
    instrument_engine(engine, registry=registry)

    with engine.begin() as connection:
        for index in range(7):
            connection.execute(insert(users).values(name=f"user-{index}"))
        for _ in range(5):
            connection.execute(select(users).where(users.c.id == 1)).all()

    assert durations(registry, **{"db.operation.name": "INSERT", "db.collection.name": "users"}) == 7
    assert durations(registry, **{"db.operation.name": "SELECT", "db.collection.name": "users"}) == 5
    assert durations(registry, **{"db.system.name": "sqlite"}) == 12


def test_duration_histogram_uses_the_semantic_convention_buckets_and_unit(
    engine: Engine, registry: MetricsRegistry
) -> None:
    instrument_engine(engine, registry=registry)
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))

    family = registry.get(DURATION)
    assert isinstance(family, HistogramFamily)
    assert family.buckets == DURATION_BUCKETS == (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
    assert family.unit == "s"


@pytest.mark.parametrize(
    ("statement", "operation", "collection", "summary"),
    [
        (select(users.c.name).where(users.c.id == 5), "SELECT", "users", "SELECT users"),
        (insert(users).values(name="x"), "INSERT", "users", "INSERT users"),
        (update(users).where(users.c.id == 5).values(name="y"), "UPDATE", "users", "UPDATE users"),
        (delete(users).where(users.c.id == 5), "DELETE", "users", "DELETE users"),
        (
            select(users.c.name, orders.c.item).join(orders, orders.c.user_id == users.c.id),
            "SELECT",
            "users",
            "SELECT users orders",
        ),
        (
            select(users.c.name).where(users.c.id.in_(select(orders.c.user_id).where(orders.c.item == "book"))),
            "SELECT",
            "users",
            "SELECT users SELECT orders",
        ),
        (
            select(users.c.name).where(
                users.c.id.in_(select(select(orders.c.user_id).cte("buyers").c.user_id))  # a CTE
            ),
            "SELECT",
            "users",
            "SELECT orders SELECT users SELECT buyers",
        ),
    ],
)
def test_summarizes_statements_that_sqlalchemy_compiles(
    engine: Engine, registry: MetricsRegistry, statement: Any, operation: str, collection: str, summary: str
) -> None:
    instrument_engine(engine, registry=registry)

    with engine.begin() as connection:
        connection.execute(statement)

    expected = {"db.operation.name": operation, "db.collection.name": collection, "db.query.summary": summary}
    assert durations(registry, **expected) == 1


def test_orm_session_queries_are_counted_and_summarized(engine: Engine, registry: MetricsRegistry) -> None:
    instrument_engine(engine, registry=registry)

    with Session(engine) as session:
        session.add_all([Customer(email="ana@example.com"), Customer(email="bob@example.com")])
        session.commit()
        found = session.scalars(select(Customer).where(Customer.email == "ana@example.com")).one()
        session.delete(found)
        session.commit()

    assert durations(registry, **{"db.query.summary": "INSERT customers"}) >= 1
    assert durations(registry, **{"db.query.summary": "SELECT customers"}) >= 1
    assert durations(registry, **{"db.query.summary": "DELETE customers"}) == 1
    assert not any("example.com" in value for value in all_attribute_values(registry))


def test_failing_statement_is_recorded_with_its_error_type_and_the_app_gets_its_exception(
    engine: Engine, registry: MetricsRegistry
) -> None:
    instrument_engine(engine, registry=registry, slow_query_seconds=0)

    with engine.connect() as connection, pytest.raises(OperationalError) as raised:
        connection.execute(text("SELECT * FROM missing_table WHERE id = 1"))

    assert type(raised.value.orig).__name__ == "OperationalError"  # SQLAlchemy wrapped the DBAPI error as usual
    failed = {"error.type": "OperationalError", "db.query.summary": "SELECT missing_table"}
    assert durations(registry, **failed) == 1
    assert slow_count(registry, **failed) == 1
    # No series without error.type was made for a statement that only failed.
    assert durations(registry, **{"db.query.summary": "SELECT missing_table"}) == 1


def test_counts_slow_queries_at_or_over_the_threshold(engine: Engine, registry: MetricsRegistry) -> None:
    # (start, end) clock readings of four queries taking 0.2, 0.7, 0.5 and 0.1 s
    clock = iter([0.0, 0.2, 10.0, 10.7, 20.0, 20.5, 30.0, 30.1]).__next__
    instrument_engine(engine, registry=registry, slow_query_seconds=0.5, clock=clock)

    with engine.connect() as connection:
        for _ in range(4):
            connection.execute(text("SELECT 1"))

    assert slow_count(registry, **{"db.query.summary": "SELECT"}) == 2  # 0.7 and 0.5
    assert durations(registry, **{"db.query.summary": "SELECT"}) == 4


def test_threshold_zero_counts_every_query_as_slow(engine: Engine, registry: MetricsRegistry) -> None:
    instrument_engine(engine, registry=registry, slow_query_seconds=0)

    with engine.connect() as connection:
        for _ in range(3):
            connection.execute(select(users))

    assert slow_count(registry, **{"db.query.summary": "SELECT users"}) == 3


def test_executemany_is_one_batch_operation_per_execute_call(engine: Engine, registry: MetricsRegistry) -> None:
    instrument_engine(engine, registry=registry)

    with engine.begin() as connection:
        connection.execute(insert(users), [{"name": f"n{index}"} for index in range(25)])
        connection.execute(insert(users), [{"name": "a"}, {"name": "b"}])

    batch = {"db.operation.name": "BATCH INSERT", "db.query.summary": "BATCH INSERT users"}
    assert durations(registry, **batch) == 2
    assert durations(registry, **{"db.operation.name": "INSERT"}) == 0


_PARAMETER = st.text(alphabet=st.characters(exclude_categories=["Cs", "Cc"]), min_size=6, max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=_PARAMETER, number=st.integers(min_value=100_000, max_value=10**12))
def test_parameters_and_literals_never_become_attributes(
    engine: Engine, registry: MetricsRegistry, secret: str, number: int
) -> None:
    instrument_engine(engine, registry=registry)
    literal = "'" + secret.replace("'", "''") + "'"

    with engine.begin() as connection:
        connection.execute(insert(users).values(name=secret))  # a bound parameter
        # Literals written into the SQL, sent as is (text() would read ":name" inside them as a parameter).
        connection.exec_driver_sql(f"SELECT * FROM users WHERE name = {literal} AND id <> {number}")  # noqa: S608
        connection.exec_driver_sql(f"UPDATE users SET name = {literal} WHERE id = {number}")  # noqa: S608

    values = all_attribute_values(registry)
    assert durations(registry, **{"db.query.summary": "SELECT users"}) >= 1
    assert not any(secret in value or str(number) in value for value in values)


def test_instrumenting_twice_never_counts_a_query_twice(engine: Engine, registry: MetricsRegistry) -> None:
    first = instrument_engine(engine, registry=registry)
    second = instrument_engine(engine, registry=registry)

    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))

    assert first is second
    assert durations(registry) == 1


def test_uninstrument_engine_stops_recording(engine: Engine, registry: MetricsRegistry) -> None:
    instrument_engine(engine, registry=registry)
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    uninstrument_engine(engine)
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))

    assert durations(registry) == 1


def test_uninstrument_engine_gives_the_dialect_its_methods_back_exactly(
    engine: Engine, registry: MetricsRegistry
) -> None:
    dialect = engine.dialect
    calls: list[str] = []
    class_execute = type(dialect).do_execute

    def earlier_wrapper(cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        calls.append(statement)  # another library's instance-level wrapper, there before us
        class_execute(dialect, cursor, statement, parameters, context)

    dialect.do_execute = earlier_wrapper  # type: ignore[method-assign]
    ours = ("do_execute", "do_execute_no_params", "do_executemany", "_otel_monitoring_recorder")
    before = {name: vars(dialect).get(name) for name in ours}
    instrument_engine(engine, registry=registry)
    during = {name: vars(dialect).get(name) for name in ("do_execute", "do_execute_no_params", "do_executemany")}
    with engine.connect() as connection:
        connection.execute(text("SELECT 1 WHERE 1 = :one"), {"one": 1})
    uninstrument_engine(engine)

    assert all(during.values()) and during["do_execute"] is not earlier_wrapper
    assert calls == ["SELECT 1 WHERE 1 = ?"]  # ours called through the earlier wrapper, which ran the statement
    assert durations(registry) == 1
    # The earlier wrapper is back, and nothing of ours is left on the dialect.
    assert (
        {name: vars(dialect).get(name) for name in ours}
        == before
        == {"do_execute": earlier_wrapper} | {name: None for name in ours[1:]}
    )


def test_a_wrapper_put_on_top_of_ours_survives_uninstrument_and_ours_stops_recording(
    engine: Engine, registry: MetricsRegistry
) -> None:
    instrument_engine(engine, registry=registry)
    dialect = engine.dialect
    ours = dialect.do_execute
    seen: list[str] = []

    def later_wrapper(cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        seen.append(statement)
        ours(cursor, statement, parameters, context)

    dialect.do_execute = later_wrapper  # type: ignore[method-assign]
    uninstrument_engine(engine)
    with engine.connect() as connection:
        connection.execute(text("SELECT 2 WHERE 2 = :two"), {"two": 2}).scalar_one()

    assert dialect.do_execute is later_wrapper
    assert seen == ["SELECT 2 WHERE 2 = ?"]
    assert durations(registry) == 0


def test_another_librarys_do_execute_listener_still_runs_and_the_query_is_counted_once(
    engine: Engine, registry: MetricsRegistry
) -> None:
    seen: list[str] = []

    def observer(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        seen.append(statement)
        return False  # did not execute it: SQLAlchemy goes on to dialect.do_execute

    event.listen(engine, "do_execute", observer)
    instrument_engine(engine, registry=registry)
    with engine.begin() as connection:
        for index in range(3):
            connection.execute(insert(users).values(name=f"seen-{index}"))

    assert len(seen) == 3
    assert durations(registry, **{"db.query.summary": "INSERT users"}) == 3


def test_a_statement_another_listener_executes_itself_is_run_once_and_never_counted_twice(
    engine: Engine, registry: MetricsRegistry
) -> None:
    def executes_itself(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        cursor.execute(statement, parameters)
        return True  # handled: SQLAlchemy skips dialect.do_execute, so our wrapper never sees it

    instrument_engine(engine, registry=registry)
    event.listen(engine, "do_execute", executes_itself)
    with engine.begin() as connection:
        connection.execute(insert(users).values(name="once"))
        rows = connection.execute(select(users.c.name).where(users.c.name == "once")).all()

    assert rows == [("once",)]  # the insert ran exactly once
    assert durations(registry) == 0  # the other library owns those calls: not recorded, certainly not twice


def test_pool_usage_counts_used_and_idle_connections(engine: Engine, registry: MetricsRegistry) -> None:
    instrument_engine(engine, registry=registry)

    with engine.connect() as first, engine.connect() as second:
        first.execute(text("SELECT 1"))
        second.execute(text("SELECT 1"))
        used_inside = connections(registry, "used")
    used_after, idle_after = connections(registry, "used"), connections(registry, "idle")
    engine.dispose()  # closes the pooled connections

    assert used_inside == 2
    assert (used_after, idle_after) == (0, 2)
    assert connections(registry, "idle") == 0
    # QueuePool: pool_size 5 + max_overflow 10 by default; the pool is named after the SQLite file
    assert (
        _sum_of(registry, "db.client.connection.max", **{"db.client.connection.pool.name": engine.url.database}) == 15
    )


def test_async_engine_queries_are_counted(tmp_path: Path, registry: MetricsRegistry) -> None:
    async def run() -> None:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'async.db'}")
        instrument_engine(engine, registry=registry, slow_query_seconds=0)
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
            for index in range(4):
                await connection.execute(insert(users).values(name=f"async-{index}"))
            rows = (await connection.execute(select(users))).all()
            assert len(rows) == 4
            with pytest.raises(OperationalError):
                await connection.execute(text("SELECT * FROM nowhere"))
        await engine.dispose()

    asyncio.run(run())

    assert durations(registry, **{"db.query.summary": "INSERT users", "db.system.name": "sqlite"}) == 4
    assert durations(registry, **{"db.query.summary": "SELECT users"}) == 1
    assert durations(registry, **{"db.query.summary": "SELECT nowhere", "error.type": "OperationalError"}) == 1
    assert slow_count(registry, **{"db.query.summary": "INSERT users"}) == 4


def test_global_instrumentor_records_engines_created_after_it_and_instrument_engine_covers_earlier_ones(
    tmp_path: Path, registry: MetricsRegistry, global_instrumentor: SQLAlchemyInstrumentor
) -> None:
    before = create_engine(f"sqlite:///{tmp_path / 'before.db'}")
    global_instrumentor.instrument(registry=registry, collectors=CollectorsConfig())
    after = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'after.db'}")

    def select_one(engine: Engine, times: int) -> None:
        with engine.connect() as connection:
            for _ in range(times):
                connection.execute(text("SELECT 1"))

    select_one(before, 2)
    select_one(after, 3)
    missed = durations(registry, **{"db.query.summary": "SELECT"})
    instrument_engine(before, registry=registry)
    select_one(before, 4)
    before.dispose()
    after.dispose()

    assert missed == 3  # an engine created before the instrumentor is not discovered ...
    assert durations(registry, **{"db.query.summary": "SELECT"}) == 7  # ... until instrument_engine


def test_global_instrumentor_wraps_every_engine_constructor_name_and_restores_them(
    tmp_path: Path, registry: MetricsRegistry, global_instrumentor: SQLAlchemyInstrumentor
) -> None:
    import sqlalchemy.engine.create
    import sqlalchemy.ext.asyncio
    import sqlalchemy.ext.asyncio.engine

    places = [
        (sqlalchemy, "create_engine"),
        (sqlalchemy.engine, "create_engine"),
        (sqlalchemy.engine.create, "create_engine"),
        (sqlalchemy.ext.asyncio, "create_async_engine"),
        (sqlalchemy.ext.asyncio.engine, "create_async_engine"),
    ]
    originals = [getattr(module, name) for module, name in places]
    global_instrumentor.instrument(registry=registry, collectors=CollectorsConfig())
    wrapped = [getattr(module, name) for module, name in places]
    from sqlalchemy import create_engine as imported_after  # what an application module imported later gets

    engines = [
        imported_after(f"sqlite:///{tmp_path / 'imported.db'}"),
        sqlalchemy.engine.create.create_engine(f"sqlite:///{tmp_path / 'create.db'}"),
        sqlalchemy.engine_from_config({"db.url": f"sqlite:///{tmp_path / 'config.db'}"}, prefix="db."),
    ]
    for engine in engines:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    global_instrumentor.uninstrument()

    assert all(now is not before for now, before in zip(wrapped, originals, strict=True))
    assert durations(registry, **{"db.query.summary": "SELECT"}) == len(engines)
    assert [getattr(module, name) for module, name in places] == originals


def test_global_instrumentor_records_async_engines(
    tmp_path: Path, registry: MetricsRegistry, global_instrumentor: SQLAlchemyInstrumentor
) -> None:
    import sqlalchemy.ext.asyncio

    global_instrumentor.instrument(registry=registry, collectors=CollectorsConfig())

    async def run() -> None:
        engine = sqlalchemy.ext.asyncio.create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'async.db'}")
        async with engine.connect() as connection:
            for _ in range(3):
                await connection.execute(text("SELECT 1"))
        await engine.dispose()

    asyncio.run(run())

    assert durations(registry, **{"db.query.summary": "SELECT"}) == 3


def test_global_instrumentor_and_instrument_engine_together_count_once(
    tmp_path: Path, registry: MetricsRegistry, global_instrumentor: SQLAlchemyInstrumentor
) -> None:
    early = create_engine(f"sqlite:///{tmp_path / 'early.db'}")
    instrument_engine(early, registry=registry)
    global_instrumentor.instrument(registry=registry, collectors=CollectorsConfig())
    late = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'late.db'}")  # set up by the instrumentor ...
    late_registry = MetricsRegistry()
    instrument_engine(late, registry=late_registry)  # ... then by hand: its own registry takes over
    instrument_engine(early, registry=registry)

    for engine in (early, late):
        with engine.connect() as connection:
            for _ in range(6):
                connection.execute(text("SELECT 1"))
        engine.dispose()

    assert durations(registry, **{"db.query.summary": "SELECT"}) == 6
    assert durations(late_registry, **{"db.query.summary": "SELECT"}) == 6


def test_global_instrumentor_does_nothing_when_the_setting_is_off(
    tmp_path: Path, registry: MetricsRegistry, global_instrumentor: SQLAlchemyInstrumentor
) -> None:
    original = sqlalchemy.create_engine
    global_instrumentor.instrument(registry=registry, collectors=CollectorsConfig(database=False))
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'off.db'}")

    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    engine.dispose()

    assert sqlalchemy.create_engine is original
    assert durations(registry) == 0


def test_global_uninstrument_stops_recording_and_gives_dialects_their_methods_back(
    tmp_path: Path, registry: MetricsRegistry, global_instrumentor: SQLAlchemyInstrumentor
) -> None:
    global_instrumentor.instrument(registry=registry, collectors=CollectorsConfig())
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'undo.db'}")
    wrapped = set(vars(engine.dialect)) & {"do_execute", "do_execute_no_params", "do_executemany"}
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    global_instrumentor.uninstrument()
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    engine.dispose()

    assert wrapped == {"do_execute", "do_execute_no_params", "do_executemany"}
    assert not set(vars(engine.dialect)) & wrapped
    assert durations(registry) == 1


@pytest.fixture
def contrib_spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    contrib = ContribSQLAlchemyInstrumentor()
    contrib.instrument(tracer_provider=tracer_provider, meter_provider=MeterProvider())
    yield exporter
    contrib.uninstrument()


def test_counts_once_beside_the_contrib_instrumentation_and_both_see_every_query(
    tmp_path: Path,
    registry: MetricsRegistry,
    contrib_spans: InMemorySpanExporter,
    global_instrumentor: SQLAlchemyInstrumentor,
) -> None:
    global_instrumentor.instrument(registry=registry, collectors=CollectorsConfig())
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'both.db'}")  # the contrib's wrapped create_engine
    instrument_engine(engine, registry=registry)

    with engine.begin() as connection:
        metadata.create_all(connection)
        contrib_spans.clear()
        for index in range(9):
            connection.execute(insert(users).values(name=f"n{index}"))
    engine.dispose()

    assert durations(registry, **{"db.query.summary": "INSERT users"}) == 9
    spans = contrib_spans.get_finished_spans()
    assert len([span for span in spans if span.name.startswith("INSERT")]) == 9, [span.name for span in spans]


def test_exported_through_telemetry_with_prometheus_names_and_no_literal(engine: Engine) -> None:
    registry = MetricsRegistry()
    reader = InMemoryMetricReader()
    telemetry = Telemetry(
        load_settings(environ={"OTEL_MONITORING_PSEUDONYM_KEY": "unit-test-key-0123456789"}),
        registry,
        extra_readers=[reader],
        start_exporters=False,
    )
    try:
        instrument_engine(engine, registry=registry)
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO users (name) VALUES ('Ada Lovelace-7781')"))
            connection.execute(select(users).where(users.c.name == "Grace Hopper-9902")).all()
        exposition = render_exposition(telemetry.prometheus_registry, None, None)[0].decode()
    finally:
        telemetry.shutdown()

    samples = {
        (sample.name, sample.labels.get("db_query_summary"), sample.labels.get("db_system_name")): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name.startswith("db_client_operation_duration_seconds_count")
    }
    assert samples[("db_client_operation_duration_seconds_count", "INSERT users", "sqlite")] == 1
    assert samples[("db_client_operation_duration_seconds_count", "SELECT users", "sqlite")] == 1
    assert "db_client_connection_count" in exposition
    assert "7781" not in exposition and "9902" not in exposition
