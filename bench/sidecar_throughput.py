"""Data points per second through the collector sidecar on one core, beside the Python ceiling and rotel.

    python bench/sidecar_throughput.py            # full run, writes bench/results/sidecar_throughput.{json,md}
    python bench/sidecar_throughput.py --quick    # a few seconds per contender, prints only (used by the tests)

The payloads are built once, by hand with opentelemetry-proto: ``--bodies`` OTLP/HTTP protobuf requests of
``--points`` data points each (5 attributes per point; cumulative monotonic sums, int and double, and a
histogram with 10 bounds), every body with its own series, so the sidecar sees a few thousand distinct
series. The same bodies feed every contender:

- **otel_monitoring**: ``otel-monitoring collector`` with the default pipeline (otlp, then ``memory_limiter``,
  ``sanitize``, ``cardinality``, ``batch``, then ``prometheus``) on free loopback ports, pinned to CPU 0 with
  ``taskset``. wrk, pinned to CPU 1, posts the bodies in turn over ``--connections`` keep-alive connections
  for ``--duration`` seconds after a warm-up. Only 2xx answers count. The sidecar's own
  ``otelcol_receiver_accepted_metric_points_total`` is read before and after as a cross-check.
- **Python ceiling**: a process pinned to CPU 0 that parses each body with protobuf's upb backend
  (``ExportMetricsServiceRequest.FromString``) and reads every point's attributes and values: what any
  Python receiver must do at least. Parsing alone is reported too.
- **rotel** (PyPI ``rotel``, a collector written in Rust): its agent binary with OTLP/HTTP in and the
  ``blackhole`` exporter out, pinned to CPU 0, driven by the same wrk run. It is not a dependency; it is
  installed beside the virtualenv for this benchmark only::

      .venv/bin/pip install --target .venv/peers/rotel rotel==0.0.1a15

  Without it a quick run reports "not installed"; a full run stops and says how to install it.

Contenders run in turn, ``--rounds`` times interleaved; the median is the figure. Ratios are ours divided by
each reference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ROTEL_PATH = ROOT / ".venv" / "peers" / "rotel"
ROTEL_AGENT = ROTEL_PATH / "rotel" / "rotel-agent"
ROTEL_VERSION = "0.0.1a15"
SERVER_CPU, LOAD_CPU = 0, 1
TARGET_RATIO = 0.60
METRICS_PATH = "/v1/metrics"

COUNTERS = 5  # counter metrics per body; the rest of the points go to one histogram
HISTOGRAM_SHARE = 0.1
BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
METHODS = ["GET", "POST", "PUT", "DELETE"]


def build_bodies(bodies: int, points: int) -> list[bytes]:
    """``bodies`` serialized ExportMetricsServiceRequests of ``points`` points each, no two sharing a series."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.metrics.v1.metrics_pb2 import AGGREGATION_TEMPORALITY_CUMULATIVE

    start, now = 1_700_000_000_000_000_000, 1_700_000_060_000_000_000

    def attributes(body: int, i: int) -> list[KeyValue]:
        return [
            KeyValue(key="http.request.method", value=AnyValue(string_value=METHODS[i % 4])),
            KeyValue(key="http.route", value=AnyValue(string_value=f"/api/v1/items/{body}/{i // 4}")),
            KeyValue(key="http.response.status_code", value=AnyValue(int_value=200 + i % 3)),
            KeyValue(key="server.address", value=AnyValue(string_value="orders.internal")),
            KeyValue(key="deployment.tier", value=AnyValue(string_value=["gold", "silver", "bronze"][i % 3])),
        ]

    histogram_points = int(points * HISTOGRAM_SHARE)
    per_counter = (points - histogram_points) // COUNTERS
    histogram_points = points - per_counter * COUNTERS
    out = []
    for body in range(bodies):
        request = ExportMetricsServiceRequest()
        rm = request.resource_metrics.add()
        rm.resource.attributes.extend(
            [
                KeyValue(key="service.name", value=AnyValue(string_value="orders")),
                KeyValue(key="service.instance.id", value=AnyValue(string_value="worker-1")),
            ]
        )
        sm = rm.scope_metrics.add()
        sm.scope.name = "bench.sidecar_throughput"
        for c in range(COUNTERS):
            metric = sm.metrics.add()
            metric.name = f"bench.requests.{c}"
            metric.unit = "{request}" if c % 2 == 0 else "s"
            metric.sum.is_monotonic = True
            metric.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
            for i in range(per_counter):
                dp = metric.sum.data_points.add()
                dp.attributes.extend(attributes(body, i))
                dp.start_time_unix_nano, dp.time_unix_nano = start, now
                if c % 2 == 0:
                    dp.as_int = 1000 + i
                else:
                    dp.as_double = 12.5 + i
        metric = sm.metrics.add()
        metric.name = "bench.request.duration"
        metric.unit = "s"
        metric.histogram.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
        for i in range(histogram_points):
            dp = metric.histogram.data_points.add()
            dp.attributes.extend(attributes(body, i))
            dp.start_time_unix_nano, dp.time_unix_nano = start, now
            dp.explicit_bounds.extend(BOUNDS)
            dp.bucket_counts.extend([i % 7 + k for k in range(len(BOUNDS) + 1)])
            dp.count = sum(dp.bucket_counts)
            dp.sum = 0.1 * dp.count
        out.append(request.SerializeToString())
    return out


def count_points(body: bytes) -> int:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    request = ExportMetricsServiceRequest.FromString(body)
    total = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                total += len(getattr(metric, metric.WhichOneof("data")).data_points)
    return total


# --- the Python ceiling, in a child process pinned to the server CPU --------------------------------------


def _read_attributes(attributes: Any) -> int:
    seen = 0
    for kv in attributes:
        value = kv.value
        which = value.WhichOneof("value")
        if kv.key and which is not None and getattr(value, which) is not None:
            seen += 1
    return seen


def read_everything(body: bytes) -> int:
    """Parse ``body`` and read every data point's attributes and values; returns the points read."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    request = ExportMetricsServiceRequest.FromString(body)
    points = 0
    for rm in request.resource_metrics:
        _read_attributes(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind in ("sum", "gauge"):
                    for dp in getattr(metric, kind).data_points:
                        _read_attributes(dp.attributes)
                        _ = (dp.start_time_unix_nano, dp.time_unix_nano, getattr(dp, dp.WhichOneof("value")))
                        points += 1
                elif kind == "histogram":
                    for hp in metric.histogram.data_points:
                        _read_attributes(hp.attributes)
                        _ = (hp.start_time_unix_nano, hp.time_unix_nano, hp.count, hp.sum)
                        _ = (list(hp.bucket_counts), list(hp.explicit_bounds))
                        points += 1
    return points


def decode_only(body: bytes) -> int:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    ExportMetricsServiceRequest.FromString(body)
    return 0


def run_ceiling(bodies: list[bytes], seconds: float) -> dict[str, Any]:
    """In the child: points per second for decode + read, and for decode alone, each for ``seconds``."""
    from google.protobuf.internal import api_implementation  # type: ignore[import-untyped]

    per_body = [count_points(body) for body in bodies]
    result: dict[str, Any] = {"protobuf_backend": api_implementation.Type()}
    for name, work in (("read", read_everything), ("decode", decode_only)):
        for body in bodies:  # warm-up
            work(body)
        done, begin = 0, time.perf_counter()
        deadline = begin + seconds
        while time.perf_counter() < deadline:
            for body, points in zip(bodies, per_body, strict=True):
                work(body)
                done += points
        result[f"{name}_points_per_s"] = done / (time.perf_counter() - begin)
    return result


# --- servers and load ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout:g} s")


def port_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as response:
        return bool(response.status == 200)


WRK_SCRIPT = """
local paths = {%(paths)s}
local bodies = {}
for i, path in ipairs(paths) do
  local file = assert(io.open(path, "rb"))
  bodies[i] = file:read("*a")
  file:close()
end
local requests = {}
local n = 0
init = function(args)
  for i, body in ipairs(bodies) do
    requests[i] = wrk.format("POST", nil, {["Content-Type"] = "application/x-protobuf"}, body)
  end
end
request = function()
  n = n %% #requests + 1
  return requests[n]
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write,
    summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(script: Path, port: int, seconds: float, connections: int) -> dict[str, Any]:
    """wrk on LOAD_CPU for ``seconds``; answered requests, non-2xx answers, socket errors and latency."""
    argv = [
        "taskset",
        "-c",
        str(LOAD_CPU),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
    ]
    argv += ["-s", str(script), f"http://127.0.0.1:{port}{METRICS_PATH}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)
    match = re.search(r"^RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$", done.stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no result from wrk:\n{done.stdout}\n{done.stderr}")
    requests, micros, status, socket_errors, timeouts, p50, p99 = map(int, match.groups())
    return {
        "requests": requests,
        "seconds": micros / 1e6,
        "non_2xx": status,
        "socket_errors": socket_errors,
        "timeouts": timeouts,
        "p50_ms": p50 / 1e3,
        "p99_ms": p99 / 1e3,
    }


SIDECAR_CONFIG = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:%(otlp)d
processors:
  memory_limiter:
    check_interval: 1s
    limit_percentage: 80
  sanitize:
  cardinality:
  batch:
    timeout: 200ms
    send_batch_size: 8192
exporters:
  prometheus:
    endpoint: 127.0.0.1:%(prom)d
    metric_expiration: 5m
extensions:
  health_check:
    endpoint: 127.0.0.1:%(health)d
service:
  extensions: [health_check]
  pipelines:
    metrics:
      receivers: [otlp]
      processors: [memory_limiter, sanitize, cardinality, batch]
      exporters: [prometheus]
"""


def _accepted_points(prom: int) -> tuple[float, float]:
    """The sidecar's accepted-points counter and its exposed series gauge, from one scrape."""
    with urllib.request.urlopen(f"http://127.0.0.1:{prom}/metrics", timeout=10) as response:
        text = response.read().decode()
    accepted = sum(
        float(m) for m in re.findall(r"^otelcol_receiver_accepted_metric_points_total\{.*\} (\S+)$", text, re.M)
    )
    series = sum(float(m) for m in re.findall(r"^otel_monitoring_exporter_series\{.*\} (\S+)$", text, re.M))
    return accepted, series


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure_ours(work: Path, script: Path, seconds: float, warmup: float, connections: int) -> dict[str, Any]:
    ports = {"otlp": free_port(), "prom": free_port(), "health": free_port()}
    config = work / "sidecar.yaml"
    config.write_text(SIDECAR_CONFIG % ports)
    executable = Path(sys.executable).with_name("otel-monitoring")
    env = {**os.environ, "OTEL_MONITORING_PSEUDONYM_KEY": "bench-sidecar-throughput-key"}
    log = (work / "sidecar.log").open("wb")
    argv = ["taskset", "-c", str(SERVER_CPU), str(executable), "collector", "--config", str(config)]
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{ports['health']}/"), 30, "the sidecar")
        run_wrk(script, ports["otlp"], warmup, connections)
        before, _ = _accepted_points(ports["prom"])
        result = run_wrk(script, ports["otlp"], seconds, connections)
        after, series = _accepted_points(ports["prom"])
    finally:
        stop(process)
        log.close()
    result["accepted_points_in_window"] = int(after - before)
    result["series_exposed"] = int(series)
    return result


def measure_rotel(work: Path, script: Path, seconds: float, warmup: float, connections: int) -> dict[str, Any]:
    http, grpc = free_port(), free_port()
    argv = ["taskset", "-c", str(SERVER_CPU), str(ROTEL_AGENT), "start", "--exporter", "blackhole"]
    argv += ["--otlp-http-endpoint", f"127.0.0.1:{http}", "--otlp-grpc-endpoint", f"127.0.0.1:{grpc}"]
    argv += ["--pid-file", str(work / "rotel.pid"), "--log-file", str(work / "rotel.log")]
    log = (work / "rotel.out").open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: port_open(http), 30, "rotel")
        run_wrk(script, http, warmup, connections)
        return run_wrk(script, http, seconds, connections)
    finally:
        stop(process)
        log.close()


def measure_ceiling(work: Path, seconds: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    argv = ["taskset", "-c", str(SERVER_CPU), sys.executable, __file__, "--child-ceiling", str(work)]
    argv += ["--duration", str(seconds)]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds * 3 + 60, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def rotel_available() -> bool:
    return ROTEL_AGENT.is_file() and os.access(ROTEL_AGENT, os.X_OK)


# --- the run ---------------------------------------------------------------------------------------------


def points_per_s(run: dict[str, Any], points_per_request: int) -> float:
    ok = run["requests"] - run["non_2xx"]
    return float(ok * points_per_request / run["seconds"])


def measure(args: argparse.Namespace, work: Path, points_per_request: int, with_rotel: bool) -> dict[str, Any]:
    script = work / "post.lua"
    paths = ", ".join(f'"{path}"' for path in sorted(work.glob("body-*.pb")))
    script.write_text(WRK_SCRIPT % {"paths": paths})
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "ceiling": [], "rotel": []}
    for _ in range(args.rounds):  # interleaved, so a noisy moment does not favour one contender
        runs["ceiling"].append(measure_ceiling(work, args.duration / 2))
        runs["ours"].append(measure_ours(work, script, args.duration, args.warmup, args.connections))
        if with_rotel:
            runs["rotel"].append(measure_rotel(work, script, args.duration, args.warmup, args.connections))
    for kind in ("ours", "rotel"):
        for run in runs[kind]:
            run["points_per_s"] = points_per_s(run, points_per_request)
    return runs


def summarize(runs: dict[str, list[dict[str, Any]]], points_per_request: int) -> list[dict[str, Any]]:
    ours = statistics.median(run["points_per_s"] for run in runs["ours"])
    ceiling = statistics.median(run["read_points_per_s"] for run in runs["ceiling"])
    decode = statistics.median(run["decode_points_per_s"] for run in runs["ceiling"])
    rotel = statistics.median(run["points_per_s"] for run in runs["rotel"]) if runs["rotel"] else None
    last = runs["ours"][-1]
    # Every 2xx answer wrk counted must be in the sidecar's accepted counter (it may hold a few more: requests
    # still in flight when wrk stopped counting).
    wrk_points = (last["requests"] - last["non_2xx"]) * points_per_request
    check = "ok" if last["accepted_points_in_window"] >= wrk_points and last["non_2xx"] == 0 else "MISMATCH"
    rows = [
        {
            "contender": "otel_monitoring sidecar (default pipeline)",
            "points_per_s": round(ours),
            "ratio_to_ceiling": round(ours / ceiling, 2),
            "ratio_to_rotel": round(ours / rotel, 2) if rotel else None,
            "p99_ms": round(statistics.median(run["p99_ms"] for run in runs["ours"]), 1),
            "non_2xx": sum(run["non_2xx"] for run in runs["ours"]),
            "series_exposed": last["series_exposed"],
            "accepted_check": check,
            "runs": [round(run["points_per_s"]) for run in runs["ours"]],
        },
        {
            "contender": "Python ceiling (upb parse + read every point)",
            "points_per_s": round(ceiling),
            "runs": [round(run["read_points_per_s"]) for run in runs["ceiling"]],
            "protobuf_backend": runs["ceiling"][-1]["protobuf_backend"],
        },
        {
            "contender": "upb parse alone",
            "points_per_s": round(decode),
            "runs": [round(run["decode_points_per_s"]) for run in runs["ceiling"]],
        },
    ]
    if rotel is None:
        rows.append({"contender": f"rotel {ROTEL_VERSION} (blackhole)", "installed": False})
    else:
        rows.append(
            {
                "contender": f"rotel {ROTEL_VERSION} (blackhole)",
                "installed": True,
                "points_per_s": round(rotel),
                "p99_ms": round(statistics.median(run["p99_ms"] for run in runs["rotel"]), 1),
                "non_2xx": sum(run["non_2xx"] for run in runs["rotel"]),
                "runs": [round(run["points_per_s"]) for run in runs["rotel"]],
            }
        )
    return rows


def render_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Collector sidecar: data points per second on one core (higher is better)",
        "",
        f"{meta['python']} on {meta['machine']} ({meta['cpus']} CPUs), protobuf {meta['protobuf']} "
        f"({meta['protobuf_backend']}). {meta['bodies']} request bodies of {meta['points_per_request']:,} points "
        f"(5 attributes each; {meta['distinct_series']:,} distinct series; cumulative sums and a histogram), "
        f"{meta['body_bytes']:,} bytes each, posted in turn by wrk ({meta['connections']} connections, CPU "
        f"{LOAD_CPU}) for {meta['duration_s']:g} s after {meta['warmup_s']:g} s of warm-up; servers pinned to CPU "
        f"{SERVER_CPU}; {meta['rounds']} rounds interleaved, median kept.",
        "",
        "| contender | points/s | ours as ratio | p99 ms | check |",
        "|---|---:|---:|---:|---|",
    ]
    ours, ceiling, decode, rotel = rows
    rotel_ratio = f"{ours['ratio_to_rotel']:.2f} of rotel" if ours["ratio_to_rotel"] is not None else "n/a"
    lines.append(
        f"| {ours['contender']} | {ours['points_per_s']} | 1.00 | {ours['p99_ms']:.1f} | {ours['accepted_check']} |"
    )
    lines.append(f"| {ceiling['contender']} | {ceiling['points_per_s']} | {ours['ratio_to_ceiling']:.2f} | | |")
    to_decode = ours["points_per_s"] / decode["points_per_s"]
    lines.append(f"| {decode['contender']} | {decode['points_per_s']} | {to_decode:.2f} | | |")
    if rotel["installed"]:
        ratio, p99 = ours["ratio_to_rotel"], rotel["p99_ms"]
        lines.append(f"| {rotel['contender']} | {rotel['points_per_s']} | {ratio:.2f} | {p99:.1f} | |")
    else:
        lines.append(f"| {rotel['contender']} | not installed | | | |")
    verdict = "meets" if ours["ratio_to_ceiling"] >= TARGET_RATIO else "MISSES"
    lines += [
        "",
        f"otel_monitoring {verdict} the target of {TARGET_RATIO:.0%} of the Python ceiling: "
        f"{ours['ratio_to_ceiling']:.2f} of it, {rotel_ratio}.",
        "",
        '"ours as ratio" is the sidecar\'s figure divided by the row\'s. "check": every 2xx answer wrk counted '
        "is in the sidecar's `otelcol_receiver_accepted_metric_points_total`, and no answer was non-2xx.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run that prints and writes nothing")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of measured load per contender")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--bodies", type=int, default=4)
    parser.add_argument("--points", type=int, default=1000, help="data points per request")
    parser.add_argument("--child-ceiling", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_ceiling:
        bodies = [path.read_bytes() for path in sorted(Path(args.child_ceiling).glob("body-*.pb"))]
        print(json.dumps(run_ceiling(bodies, args.duration)))
        return 0
    if args.quick:
        args.duration, args.warmup, args.rounds = 2.0, 1.0, 1
    for tool in ("taskset", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed; this benchmark needs it (scripts/bootstrap)", file=sys.stderr)
            return 2
    with_rotel = rotel_available()
    if not with_rotel and not args.quick:
        print(
            f"rotel is not installed at {ROTEL_PATH}; a full run measures it. Install it with\n"
            f"    .venv/bin/pip install --target {ROTEL_PATH.relative_to(ROOT)} rotel=={ROTEL_VERSION}",
            file=sys.stderr,
        )
        return 2
    import google.protobuf  # type: ignore[import-untyped]
    from google.protobuf.internal import api_implementation

    bodies = build_bodies(args.bodies, args.points)
    points_per_request = count_points(bodies[0])
    with tempfile.TemporaryDirectory(prefix="sidecar-throughput-") as tmp:
        work = Path(tmp)
        for i, body in enumerate(bodies):
            (work / f"body-{i}.pb").write_bytes(body)
        runs = measure(args, work, points_per_request, with_rotel)
    meta = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "protobuf": google.protobuf.__version__,
        "protobuf_backend": api_implementation.Type(),
        "bodies": args.bodies,
        "points_per_request": points_per_request,
        "distinct_series": args.bodies * args.points,
        "body_bytes": len(bodies[0]),
        "connections": args.connections,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "rotel": ROTEL_VERSION if with_rotel else None,
    }
    rows = summarize(runs, points_per_request)
    report = render_markdown(rows, meta)
    print(report)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "sidecar_throughput.json").write_text(
            json.dumps({"meta": meta, "rows": rows, "runs": runs}, indent=2) + "\n"
        )
        (RESULTS / "sidecar_throughput.md").write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
