"""The demo's batch job: a usage report over the service's SQLite database, pushed to the Pushgateway.

A batch job ends before Prometheus would scrape it, so it pushes, as the README shows::

    python -m otel_monitoring.demo.batch --database sqlite:///content.db --pushgateway http://127.0.0.1:9091

It counts the generations by status and the tokens, sets gauges, and pushes once (the grouping key is the job name,
``usage-report``); the stack runs it a few seconds into the demo.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from sqlalchemy import create_engine, func, select

__all__ = ["JOB", "main"]

JOB = "usage-report"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m otel_monitoring.demo.batch", description="the demo's batch job")
    parser.add_argument("--database", required=True, help="SQLAlchemy URL of the service's database")
    parser.add_argument("--pushgateway", required=True, help="Pushgateway base URL")
    args = parser.parse_args(argv)

    from otel_monitoring import config, exporter, metrics
    from otel_monitoring.demo.app import generations_table

    config.configure_exporter(push_gateway=args.pushgateway, job_name=JOB)
    started = time.perf_counter()
    rows = metrics.gauge("usage_report_generations", "Generations in the database, by status", labelnames=("status",))
    tokens = metrics.gauge("usage_report_tokens", "Tokens of every generation in the database, by type",
                           labelnames=("kind",))  # fmt: skip
    duration = metrics.gauge("usage_report_duration_seconds", "How long the last report took")
    finished = metrics.gauge("usage_report_last_success_timestamp_seconds", "When the last report finished")

    engine = create_engine(args.database)
    table = generations_table
    with engine.connect() as connection:
        for status, count in connection.execute(select(table.c.status, func.count()).group_by(table.c.status)):
            rows.labels(status=status).set(count)
        totals = connection.execute(
            select(func.coalesce(func.sum(table.c.input_tokens), 0), func.coalesce(func.sum(table.c.output_tokens), 0))
        ).one()
    engine.dispose()
    tokens.labels(kind="input").set(totals[0])
    tokens.labels(kind="output").set(totals[1])
    duration.set(time.perf_counter() - started)
    finished.set(time.time())
    return 0 if exporter.push() else 1


if __name__ == "__main__":
    raise SystemExit(main())
