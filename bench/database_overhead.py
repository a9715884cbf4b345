"""Per-query overhead of the database instrumentation on SQLite, against no instrumentation and the peer.

    python bench/database_overhead.py            # full run, writes bench/results/database_overhead.{json,md}
    python bench/database_overhead.py --quick    # a short run, prints only (used by the tests)

Contenders, each on its own engine over the same SQLite file, measured in the same process:

- ``bare``: no instrumentation;
- ``otel_monitoring``: ``instrument_engine(engine)`` (metrics into a fresh registry): timing wrappers on the
  dialect's ``do_execute`` methods, and pool-event tracking;
- ``opentelemetry-instrumentation-sqlalchemy``: the contrib instrumentor on its engine, with an SDK
  ``TracerProvider`` whose ``SimpleSpanProcessor`` exports to an exporter that drops spans, so building and
  ending every span is paid (as in production) but nothing piles up in memory;
- ``cursor-event floor``: two empty ``before_cursor_execute`` / ``after_cursor_execute`` listeners, the least
  any instrumentation built on SQLAlchemy's connection events can cost (why ours does not use them).

The contrib instrumentor also wraps ``Engine.connect`` for every engine; the other contenders' engines get
the unwrapped method back, so only the contrib engine pays for it.

Cases: ``conn.execute(text("SELECT 1"))`` on an open connection (the trivial query of the target), an ORM
``session.execute(select(User).where(User.id == ?)).scalar_one()`` for one row, and ``with engine.connect()``
around ``SELECT 1`` (a pool checkout and checkin per query). Each round times ``--number`` queries per
contender, contenders interleaved in a rotating order, ``--repeat`` rounds; the figure is the median of the
rounds, in microseconds per query, and the overhead is relative to ``bare`` of the same case.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from otel_monitoring.collectors.database import instrument_engine
from otel_monitoring.metrics import MetricsRegistry

RESULTS = Path(__file__).parent / "results"
BARE, OURS, PEER, FLOOR = "bare", "otel_monitoring", "opentelemetry-instrumentation-sqlalchemy", "cursor-event floor"
TARGET = 0.05  # ours under 5% on the trivial query


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class DroppingExporter(SpanExporter):
    """Accepts every span and keeps none."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def build_engines(path: Path) -> tuple[dict[str, Engine], Any]:
    url = f"sqlite:///{path}"
    engines = {name: create_engine(url) for name in (BARE, OURS, PEER, FLOOR)}
    Base.metadata.create_all(engines[BARE])
    with Session(engines[BARE]) as session:
        session.add_all([User(id=1, name="ada"), User(id=2, name="grace")])
        session.commit()

    instrument_engine(engines[OURS], registry=MetricsRegistry(), slow_query_seconds=0.5)

    def passthrough(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> Any:
        return statement, parameters

    def nothing(*args: Any) -> None:
        return None

    event.listen(engines[FLOOR], "before_cursor_execute", passthrough, retval=True)
    event.listen(engines[FLOOR], "after_cursor_execute", nothing)

    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(DroppingExporter()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    peer = SQLAlchemyInstrumentor()
    peer.instrument(engine=engines[PEER], tracer_provider=tracer_provider, meter_provider=meter_provider)
    # The peer wrapped Engine.connect for every engine: give the others the original method back.
    original_connect = Engine.connect.__wrapped__  # type: ignore[attr-defined]
    for name in (BARE, OURS, FLOOR):
        engines[name].connect = types.MethodType(original_connect, engines[name])  # type: ignore[method-assign]
    return engines, peer


def build_cases(engines: dict[str, Engine]) -> tuple[list[tuple[str, dict[str, Callable[[], Any]]]], list[Any]]:
    opened: list[Any] = []
    trivial: dict[str, Callable[[], Any]] = {}
    orm: dict[str, Callable[[], Any]] = {}
    per_connect: dict[str, Callable[[], Any]] = {}
    select_one = text("SELECT 1")
    by_id = select(User).where(User.id == 1)
    for name, engine in engines.items():
        connection = engine.connect()
        session = Session(engine)
        opened += [connection, session]
        trivial[name] = functools.partial(connection.execute, select_one)
        orm[name] = functools.partial(lambda session: session.execute(by_id).scalar_one(), session)

        def connect_and_select(engine: Engine = engine) -> Any:
            with engine.connect() as connection:
                return connection.execute(select_one).scalar()

        per_connect[name] = connect_and_select
    cases = [
        ('conn.execute(text("SELECT 1"))', trivial),
        ("ORM select(User).where(User.id == 1), one row", orm),
        ('engine.connect() + text("SELECT 1")', per_connect),
    ]
    return cases, opened


def time_calls(call: Callable[[], Any], number: int) -> float:
    """Microseconds per call over ``number`` calls."""
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number * 1e6


def measure(number: int, repeat: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    with tempfile.TemporaryDirectory() as directory:
        engines, peer = build_engines(Path(directory) / "bench.db")
        cases, opened = build_cases(engines)
        rows = []
        try:
            for case, contenders in cases:
                names = list(contenders)
                for call in contenders.values():  # warm caches: compiled statements, summaries, series
                    time_calls(call, max(number // 10, 100))
                runs: dict[str, list[float]] = {name: [] for name in names}
                for round_index in range(repeat):
                    order = names[round_index % len(names) :] + names[: round_index % len(names)]
                    for name in order:  # rotating order, so a noisy moment does not favour one contender
                        gc.collect()
                        runs[name].append(time_calls(contenders[name], number))
                medians = {name: statistics.median(values) for name, values in runs.items()}
                rows.append(
                    {
                        "case": case,
                        "us_per_query": {name: round(value, 3) for name, value in medians.items()},
                        "overhead": {name: round(value / medians[BARE] - 1, 4) for name, value in medians.items()},
                        "runs_us": {name: [round(v, 3) for v in values] for name, values in runs.items()},
                    }
                )
        finally:
            for resource in opened:
                resource.close()
            peer.uninstrument()
            for engine in engines.values():
                engine.dispose()
    meta = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "sqlalchemy": sqlalchemy.__version__,
        "number": number,
        "repeat": repeat,
        "statistic": "median of rounds",
    }
    return rows, meta


def render_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Database instrumentation overhead (µs per query on SQLite, lower is better)",
        "",
        f"Python {meta['python']} on {meta['machine']}, SQLAlchemy {meta['sqlalchemy']}; {meta['number']} queries "
        f"per round, {meta['repeat']} rounds, contenders interleaved; the median round is kept.",
        "",
        "| case | contender | µs per query | overhead vs bare |",
        "|---|---|---:|---:|",
    ]
    for row in rows:
        for name, value in row["us_per_query"].items():
            overhead = "—" if name == BARE else f"{row['overhead'][name] * 100:+.1f}%"
            lines.append(f"| {row['case']} | {name} | {value:.2f} | {overhead} |")
    trivial = rows[0]["overhead"][OURS]
    verdict = "met" if trivial < TARGET else "missed"
    lines += ["", f"Target (otel_monitoring under {TARGET:.0%} on the trivial query): {verdict} ({trivial:+.1%})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run that prints and writes nothing")
    parser.add_argument("--number", type=int, default=20_000, help="queries per contender per round")
    parser.add_argument("--repeat", type=int, default=21, help="rounds")
    args = parser.parse_args(argv)
    number, repeat = (500, 3) if args.quick else (args.number, args.repeat)
    rows, meta = measure(number, repeat)
    report = render_markdown(rows, meta)
    print(report)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "database_overhead.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        (RESULTS / "database_overhead.md").write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
