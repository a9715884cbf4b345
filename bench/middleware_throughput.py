"""Throughput cost of HTTP metrics middleware: ours and its peers, side by side in one run.

    python bench/middleware_throughput.py            # full run, writes bench/results/middleware_throughput.{json,md}
    python bench/middleware_throughput.py --quick    # 1 round of 1 s, bare and otel_monitoring, prints only

Each variant of bench/apps.py is served by its own ``uvicorn`` process (1 worker, no access log) on
127.0.0.1, pinned to CPU 0 with ``taskset`` when it exists; ``wrk`` (Debian's) runs pinned to CPU 1
and loads ``GET /hello/{name}`` for a bounded time. Every measurement starts a fresh server, warms it
up, measures, then scrapes ``/metrics`` to check that the middleware recorded at least every request
wrk saw answered (and not wildly more), so a middleware that drops its work cannot look fast.
Rounds are interleaved over the variants, with the order rotated each round, so drift on the machine
hits them alike; the figure is the median requests/s per variant, and the ratio is to the bare app.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make ``bench.apps`` importable
    sys.path.insert(0, str(REPO))

from bench.apps import CONFIGURATION, REQUEST_COUNTS, VARIANT_ENV, VARIANTS  # noqa: E402

RESULTS = REPO / "bench" / "results"
HOST = "127.0.0.1"
PATH = "/hello/world"
SERVER_CPU, CLIENT_CPU = "0", "1"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
QUICK_VARIANTS = ("bare", "otel_monitoring")
PACKAGES = (
    "starlette",
    "uvicorn",
    "h11",
    "httptools",
    "uvloop",
    "prometheus-client",
    "starlette-exporter",
    "prometheus-fastapi-instrumentator",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-asgi",
    "opentelemetry-exporter-prometheus",
    "otel-monitoring",
)


class BenchError(RuntimeError):
    """A server did not start, wrk failed, or a middleware did not record the requests it served."""


@dataclass
class WrkResult:
    requests_per_s: float
    requests: int
    non_2xx: int
    socket_errors: int


@dataclass
class Measurement:
    variant: str
    round: int
    requests_per_s: float
    requests: int
    warmup_requests: int
    socket_errors: int
    recorded: int | None
    server_cpu_s: float | None
    server_cpu_share: float | None
    requests_per_cpu_s: float | None


def http_implementation() -> str:
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


def loop_implementation() -> str:
    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(cpu: str, command: list[str]) -> list[str]:
    taskset = shutil.which("taskset")
    if taskset is None or (os.cpu_count() or 1) < 2:
        return command
    return [taskset, "-c", cpu, *command]


def get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return int(response.status), response.read().decode()


class Server:
    """One uvicorn process serving one variant; a context manager that always stops it."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.probes = 0
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - the server's output outlives this call; stop() closes it
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.apps:create_app_from_env",
            "--factory",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--http",
            http_implementation(),
            "--loop",
            loop_implementation(),
        ]
        env = {**os.environ, VARIANT_ENV: variant, "PYTHONPATH": str(REPO)}
        env.pop("OTEL_SEMCONV_STABILITY_OPT_IN", None)  # bench/apps.py sets it where a variant wants it
        self._process = subprocess.Popen(
            pinned(SERVER_CPU, command), cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def __enter__(self) -> Server:
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BenchError(f"{self.variant}: uvicorn exited with {self._process.returncode}:\n{self.log()}")
            try:
                self.probes += 1
                status, _ = get(f"{self.base}/hello/ready", timeout=1.0)
                if status == 200:
                    return
            except (OSError, urllib.error.URLError):
                self.probes -= 1  # refused before reaching the app: nothing recorded
            time.sleep(0.05)
        raise BenchError(f"{self.variant}: not ready on {self.base} within {START_TIMEOUT_S:.0f} s:\n{self.log()}")

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process so far, from /proc (None where there is none)."""
        try:
            stat = Path(f"/proc/{self._process.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 is fields[0]
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=STOP_TIMEOUT_S)
        self._log.close()


_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def parse_wrk(output: str) -> WrkResult:
    rps, total = _RPS.search(output), _TOTAL.search(output)
    if rps is None or total is None:
        raise BenchError(f"could not read wrk's output:\n{output}")
    non_2xx = _NON_2XX.search(output)
    errors = _SOCKET_ERRORS.search(output)
    return WrkResult(
        requests_per_s=float(rps.group(1)),
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def run_wrk(url: str, seconds: int, connections: int) -> WrkResult:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s", url]
    try:
        done = subprocess.run(
            pinned(CLIENT_CPU, command), capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise BenchError(f"wrk did not finish within {seconds + 30} s") from error
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}: {done.stderr or done.stdout}")
    result = parse_wrk(done.stdout)
    if result.non_2xx:
        raise BenchError(f"{url}: {result.non_2xx} responses were not 2xx or 3xx; a failing app is not a fast one")
    return result


def recorded_requests(exposition: str, sample: str, label: str | None) -> int:
    """Sum of ``sample`` over the series that carry ``label`` (all of them when None)."""
    total = 0.0
    for line in exposition.splitlines():
        named = line.startswith(sample + "{") or line.startswith(sample + " ")
        if named and (label is None or label in line):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def measure(variant: str, round_index: int, seconds: int, warmup: int, connections: int) -> Measurement:
    with Server(variant) as server:
        url = server.base + PATH
        warm = run_wrk(url, warmup, connections)
        cpu_before, wall_before = server.cpu_seconds(), time.monotonic()
        result = run_wrk(url, seconds, connections)
        cpu_after, wall = server.cpu_seconds(), time.monotonic() - wall_before
        # The server saturates its core, so requests per CPU-second of the server is the same figure as
        # requests/s when nothing else runs there, and stays honest when another process takes the core.
        cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
        recorded = None
        if variant in REQUEST_COUNTS:
            time.sleep(0.2)  # let any response still being written finish its recording
            status, exposition = get(server.base + "/metrics", timeout=10.0)
            sample, label = REQUEST_COUNTS[variant]
            recorded = recorded_requests(exposition, sample, label)
            answered = server.probes + warm.requests + result.requests
            # wrk does not count the responses still in flight when it stops: at most one per connection per run.
            slack = 2 * connections
            if status != 200 or not answered <= recorded <= answered + slack:
                raise BenchError(
                    f"{variant}: /metrics ({status}) counts {recorded} requests in {sample} {label or ''}, "
                    f"but {answered} were answered (expected between {answered} and {answered + slack})"
                )
    return Measurement(
        variant=variant,
        round=round_index,
        requests_per_s=result.requests_per_s,
        requests=result.requests,
        warmup_requests=warm.requests,
        socket_errors=warm.socket_errors + result.socket_errors,
        recorded=recorded,
        server_cpu_s=round(cpu, 2) if cpu else None,
        server_cpu_share=round(cpu / wall, 3) if cpu else None,
        requests_per_cpu_s=round(result.requests / cpu, 1) if cpu else None,
    )


def summarize(measurements: list[Measurement], variants: tuple[str, ...]) -> list[dict[str, Any]]:
    by_variant = {v: [m for m in measurements if m.variant == v] for v in variants}
    bare_by_round = {m.round: m.requests_per_s for m in by_variant.get("bare", [])}
    bare_median = statistics.median(bare_by_round.values()) if bare_by_round else None
    bare_per_cpu = [m.requests_per_cpu_s for m in by_variant.get("bare", []) if m.requests_per_cpu_s]
    bare_per_cpu_median = statistics.median(bare_per_cpu) if bare_per_cpu else None
    rows = []
    for variant, runs in by_variant.items():
        figures = [m.requests_per_s for m in runs]
        median = statistics.median(figures)
        paired = [m.requests_per_s / bare_by_round[m.round] for m in runs if m.round in bare_by_round]
        per_cpu = [m.requests_per_cpu_s for m in runs if m.requests_per_cpu_s]
        per_cpu_median = statistics.median(per_cpu) if per_cpu else None
        shares = [m.server_cpu_share for m in runs if m.server_cpu_share]
        rows.append(
            {
                "variant": variant,
                "requests_per_s_median": round(median, 1),
                "requests_per_s_min": round(min(figures), 1),
                "requests_per_s_max": round(max(figures), 1),
                "requests_per_s_runs": figures,
                "ratio_to_bare": round(median / bare_median, 3) if bare_median else None,
                "paired_ratio_median": round(statistics.median(paired), 3) if paired else None,
                "paired_ratio_min": round(min(paired), 3) if paired else None,
                "paired_ratio_max": round(max(paired), 3) if paired else None,
                "requests_per_cpu_s_median": round(per_cpu_median, 1) if per_cpu_median else None,
                "per_cpu_ratio_to_bare": (
                    round(per_cpu_median / bare_per_cpu_median, 3) if per_cpu_median and bare_per_cpu_median else None
                ),
                "server_cpu_share_min": min(shares) if shares else None,
                "recorded_check": "n/a" if variant not in REQUEST_COUNTS else "ok",
                "configuration": CONFIGURATION[variant],
            }
        )
    return rows


def describe_machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False).stdout
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    # The middleware changes while this benchmark is rerun: tie the figures to the exact source measured.
    digest = hashlib.sha256((REPO / "otel_monitoring" / "asgi.py").read_bytes()).hexdigest()[:12]
    versions["otel-monitoring"] += f" (otel_monitoring/asgi.py sha256 {digest})"
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "wrk": wrk_version.split(" Copyright")[0] if wrk_version else "unknown",
        "packages": versions,
    }


def render_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    machine, params = meta["machine"], meta["parameters"]
    lines = [
        "# HTTP middleware throughput (requests/s, higher is better)",
        "",
        "Starlette hello world, `GET /hello/{name}` (templated route), one uvicorn worker "
        f"(`--http {params['http']} --loop {params['loop']}`, no access log) pinned to CPU {params['server_cpu']}; "
        f"`wrk -t1 -c{params['connections']} -d{params['seconds']}s --timeout 2s` pinned to CPU "
        f"{params['client_cpu']}; {params['warmup_seconds']} s warm-up on a fresh server before every run; "
        f"{params['rounds']} interleaved rounds (order rotated each round), median kept. "
        "Ratio = median / bare median; paired = the per-round ratio to the bare run of the same round. "
        "Req per server CPU-s = responses / CPU time the server process used during the run (largely "
        "insensitive to another process taking turns on the server's core); CPU share = that CPU time / wall time.",
        "",
        "| variant | req/s median | min-max | ratio to bare | paired ratio median (min-max) "
        "| req per server CPU-s median (ratio to bare) | server CPU share min | recorded check |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        ratio = f"{row['ratio_to_bare']:.2f}" if row["ratio_to_bare"] is not None else "n/a"
        paired = (
            f"{row['paired_ratio_median']:.2f} ({row['paired_ratio_min']:.2f}-{row['paired_ratio_max']:.2f})"
            if row["paired_ratio_median"] is not None
            else "n/a"
        )
        per_cpu = (
            f"{row['requests_per_cpu_s_median']:.0f} ({row['per_cpu_ratio_to_bare']:.2f})"
            if row["per_cpu_ratio_to_bare"] is not None
            else "n/a"
        )
        share = f"{row['server_cpu_share_min']:.2f}" if row["server_cpu_share_min"] is not None else "n/a"
        lines.append(
            f"| {row['variant']} | {row['requests_per_s_median']:.0f} | "
            f"{row['requests_per_s_min']:.0f}-{row['requests_per_s_max']:.0f} | {ratio} | {paired} | "
            f"{per_cpu} | {share} | {row['recorded_check']} |"
        )
    lines += [
        "",
        f"Machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['platform']}; Python {machine['python']}; "
        f"{machine['wrk']}; total wall time {meta['wall_seconds']:.0f} s.",
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in machine["packages"].items()) + ".",
        "",
        "## What each variant runs",
        "",
    ]
    lines += [f"- **{row['variant']}**: {row['configuration']}" for row in rows]
    lines += [
        "",
        "Recorded check: after each measured run the variant's `/metrics` was scraped and its count of "
        "hello-route requests had to lie between the responses wrk and the readiness probe saw and that "
        f"plus {2 * params['connections']} (responses in flight when wrk stops are not counted by wrk).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s, bare and otel_monitoring; prints only")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5, help="duration of each measured wrk run")
    parser.add_argument("--warmup", type=int, default=2, help="duration of the warm-up wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("middleware_throughput: wrk not found on PATH (apt-get install wrk)", file=sys.stderr)
        return 2
    variants: tuple[str, ...]
    if args.quick:
        rounds, seconds, warmup, variants = 1, 1, 1, QUICK_VARIANTS
    else:
        rounds, seconds, warmup, variants = args.rounds, args.seconds, args.warmup, tuple(args.variants)
    if "bare" not in variants:
        variants = ("bare", *variants)

    started = time.monotonic()
    measurements: list[Measurement] = []
    try:
        for round_index in range(rounds):
            shift = round_index % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                measurement = measure(variant, round_index, seconds, warmup, args.connections)
                measurements.append(measurement)
                print(
                    f"round {round_index + 1}/{rounds} {variant}: {measurement.requests_per_s:.0f} req/s, "
                    f"{measurement.requests_per_cpu_s} per server CPU-s (CPU share {measurement.server_cpu_share}, "
                    f"recorded {measurement.recorded if measurement.recorded is not None else 'n/a'})",
                    file=sys.stderr,
                    flush=True,
                )
    except BenchError as error:
        print(f"middleware_throughput: {error}", file=sys.stderr)
        return 1

    rows = summarize(measurements, variants)
    meta = {
        "machine": describe_machine(),
        "parameters": {
            "rounds": rounds,
            "seconds": seconds,
            "warmup_seconds": warmup,
            "connections": args.connections,
            "wrk_threads": 1,
            "path": PATH,
            "http": http_implementation(),
            "loop": loop_implementation(),
            "server_cpu": SERVER_CPU if shutil.which("taskset") else "any",
            "client_cpu": CLIENT_CPU if shutil.which("taskset") else "any",
        },
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    report = render_markdown(rows, meta)
    print(report)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        payload = {"meta": meta, "rows": rows, "measurements": [asdict(m) for m in measurements]}
        (RESULTS / "middleware_throughput.json").write_text(json.dumps(payload, indent=2) + "\n")
        (RESULTS / "middleware_throughput.md").write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
