"""CPU cost of one collection of all system metrics: ours against opentelemetry-instrumentation-system-metrics.

    python bench/system_collection.py            # full run, writes bench/results/system_collection.{json,md}
    python bench/system_collection.py --quick    # a few collections, prints only (used by the tests)

Each contender registers its instruments on a MeterProvider with an ``InMemoryMetricReader`` and is
collected ``--collections`` times; the figure is the CPU time (``time.process_time``, user + system, so
syscalls count) per collection, the median over ``--rounds`` rounds. Every contender runs in a process of
its own (the peer's instrumentor is a singleton, and nothing is shared), rounds interleaved.

The peer, opentelemetry-instrumentation-system-metrics 0.66b1 (the release that matches our
opentelemetry-sdk 1.45.1), is not a dependency: installed into the virtualenv's site-packages its
``opentelemetry_instrumentor`` entry point would load under ``opentelemetry-instrument`` and export every
system metric twice. It is installed beside it for this benchmark only::

    .venv/bin/pip install --no-deps --target .venv/peers/system-metrics \
        opentelemetry-instrumentation-system-metrics==0.66b1

Without it the peer rows say "not installed".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PEER_PATH = ROOT / ".venv" / "peers" / "system-metrics"
TARGET_MS = 5.0

CONTENDERS = {
    "otel_monitoring (all groups)": "ours",
    "otel_monitoring (all but tcp)": "ours-no-tcp",
    "peer (default config)": "peer",
    "peer (without system.network.connections)": "peer-no-connections",
}


def _setup(kind: str) -> Any:
    """Register the contender's instruments; returns the reader to collect."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    if kind.startswith("ours"):
        from otel_monitoring.collectors.container import ContainerMetricsCollector
        from otel_monitoring.collectors.system import PROCESS_GROUPS, SystemMetricsCollector

        groups = [group for group in PROCESS_GROUPS if not (kind == "ours-no-tcp" and group == "tcp")]
        SystemMetricsCollector(provider, groups)
        ContainerMetricsCollector(provider)
    else:
        sys.path.insert(0, str(PEER_PATH))
        from opentelemetry.instrumentation.system_metrics import (  # type: ignore[import-not-found]
            _DEFAULT_CONFIG,
            SystemMetricsInstrumentor,
        )

        config = dict(_DEFAULT_CONFIG)
        if kind == "peer-no-connections":
            config.pop("system.network.connections", None)
        SystemMetricsInstrumentor(config=config).instrument(meter_provider=provider)
    return reader


def _points(data: Any) -> int:
    return sum(
        len(metric.data.data_points) for rm in data.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics
    )


def run_contender(kind: str, collections: int) -> dict[str, Any]:
    """In the child process: set up, warm up, then time ``collections`` collections."""
    reader = _setup(kind)
    for _ in range(3):  # first collections create the SDK's storage for every series
        data = reader.get_metrics_data()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(collections):
        data = reader.get_metrics_data()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "cpu_ms": cpu / collections * 1e3,
        "wall_ms": wall / collections * 1e3,
        "points": _points(data),
        "metrics": sorted({m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}),
    }


def _peer_available() -> bool:
    return (PEER_PATH / "opentelemetry" / "instrumentation" / "system_metrics").is_dir()


def _spawn(kind: str, collections: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--collections", str(collections)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(collections: int, rounds: int) -> list[dict[str, Any]]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
    for _ in range(rounds):  # interleaved, so a noisy moment does not favour one contender
        for name, kind in CONTENDERS.items():
            if kind.startswith("peer") and not _peer_available():
                continue
            runs[name].append(_spawn(kind, collections))
    rows = []
    ours = statistics.median(run["cpu_ms"] for run in runs["otel_monitoring (all groups)"])
    for name, results in runs.items():
        if not results:
            rows.append({"contender": name, "installed": False})
            continue
        cpu = statistics.median(run["cpu_ms"] for run in results)
        rows.append(
            {
                "contender": name,
                "installed": True,
                "cpu_ms_per_collection": round(cpu, 3),
                "cpu_ms_min": round(min(run["cpu_ms"] for run in results), 3),
                "wall_ms_per_collection": round(statistics.median(run["wall_ms"] for run in results), 3),
                "data_points": results[-1]["points"],
                "metrics": results[-1]["metrics"],
                "ratio_to_ours": round(cpu / ours, 2),
            }
        )
    return rows


def render_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# System metrics: CPU per collection (ms, lower is better)",
        "",
        f"{meta['python']} on {meta['machine']} ({meta['cpus']} CPUs), psutil {meta['psutil']}; "
        f"{meta['collections']} collections x {meta['rounds']} rounds, median kept; target {TARGET_MS:g} ms.",
        "",
        "| contender | CPU ms / collection | wall ms | data points | ratio to ours |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        if not row["installed"]:
            lines.append(f"| {row['contender']} | not installed | | | |")
            continue
        lines.append(
            f"| {row['contender']} | {row['cpu_ms_per_collection']:.2f} | {row['wall_ms_per_collection']:.2f} "
            f"| {row['data_points']} | {row['ratio_to_ours']:.2f} |"
        )
    ours = rows[0]["cpu_ms_per_collection"]
    verdict = "meets" if ours < TARGET_MS else "MISSES"
    lines += ["", f"otel_monitoring {verdict} the {TARGET_MS:g} ms target: {ours:.2f} ms per collection."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run that prints and writes nothing")
    parser.add_argument("--collections", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_contender(args.child, args.collections)))
        return 0
    collections, rounds = (10, 1) if args.quick else (args.collections, args.rounds)
    import psutil  # type: ignore[import-untyped]

    meta = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "psutil": psutil.__version__,
        "collections": collections,
        "rounds": rounds,
    }
    rows = measure(collections, rounds)
    report = render_markdown(rows, meta)
    print(report)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "system_collection.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        (RESULTS / "system_collection.md").write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
