"""The benchmarks in bench/ still run: their quick modes finish and report a figure for every contender."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.support import ROOT


def run_quick(script: str, timeout: float) -> subprocess.CompletedProcess[str]:
    # The repository root on PYTHONPATH, so the scripts import otel_monitoring and bench without an install.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, f"bench/{script}", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


RESULTS = ROOT / "bench" / "results"
Stamps = dict[str, int]


def result_stamps() -> Stamps:
    return {path.name: path.stat().st_mtime_ns for path in RESULTS.glob("middleware_throughput.*")}


@pytest.fixture(scope="module")
def middleware_quick_run() -> tuple[subprocess.CompletedProcess[str], Stamps]:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (Debian package 'wrk'); the throughput benchmark drives load with it")
    before = result_stamps()
    return run_quick("middleware_throughput.py", timeout=90), before


def test_middleware_throughput_quick_run_reports_req_per_s_and_ratio_for_bare_and_ours(
    middleware_quick_run: tuple[subprocess.CompletedProcess[str], Stamps],
) -> None:
    done, _ = middleware_quick_run

    assert done.returncode == 0, done.stderr
    for variant in ("bare", "otel_monitoring"):
        row = re.search(rf"^\| {variant} \| (\d+) \| \d+-\d+ \| (\d+\.\d\d) \|", done.stdout, re.MULTILINE)
        assert row is not None, f"no figure for {variant} in:\n{done.stdout}"
        assert int(row.group(1)) > 0 and float(row.group(2)) > 0
    # Ours passed the check that its /metrics counted every request wrk saw answered.
    assert re.search(r"^\| otel_monitoring \|.*\| ok \|$", done.stdout, re.MULTILINE), done.stdout


def test_middleware_throughput_quick_run_leaves_committed_results_untouched(
    middleware_quick_run: tuple[subprocess.CompletedProcess[str], Stamps],
) -> None:
    done, before = middleware_quick_run

    assert done.returncode == 0, done.stderr
    assert result_stamps() == before


def test_recording_cost_quick_run_reports_ns_per_call_for_every_case() -> None:
    done = run_quick("recording_cost.py", timeout=60)

    assert done.returncode == 0, done.stderr
    cases = (
        "bound counter inc()",
        "bound histogram observe(v)",
        "labels(a, b).inc()",
        "labels(method=a, route=b).inc()",
        "inc(1, attributes)",
    )
    for case in cases:
        # ours, prometheus_client, the SDK (or n/a where it has no such call), and the ratio
        row = rf"^\| {re.escape(case)} \| (\d+) \| (\d+) \| (\d+|n/a) \| \d+\.\d\d \|$"
        match = re.search(row, done.stdout, re.MULTILINE)
        assert match is not None, f"no figures for {case!r} in:\n{done.stdout}"
        assert int(match.group(1)) > 0 and int(match.group(2)) > 0


def test_pipeline_cost_quick_run_reports_a_figure_per_default_processor() -> None:
    done = run_quick("pipeline_cost.py", timeout=120)

    assert done.returncode == 0, done.stderr
    for step in ("sanitize", "business", "cardinality"):
        match = re.search(rf"^\| {step} \| (\d+\.\d\d) \| (\d+\.\d\d) \|$", done.stdout, re.MULTILINE)
        assert match is not None, f"no figure for {step!r} in:\n{done.stdout}"
        assert float(match.group(1)) > 0


def test_cardinality_burst_quick_run_stays_within_the_limit_plus_one_overflow_series() -> None:
    done = run_quick("cardinality_burst.py", timeout=180)

    assert done.returncode == 0, done.stderr
    rows = dict(re.findall(r"^\| (.+?) \| ([\d,]+) \|", done.stdout, re.MULTILINE))
    assert rows["otel_monitoring facade (limit 2000)"] == "2,001"
    assert rows["cardinality processor (limit 2000)"] == "2,001"
    assert rows["prometheus_client (no limit)"] == "20,000"  # the peers keep every value


def test_system_collection_quick_run_reports_cpu_per_collection_for_ours_and_the_peer() -> None:
    done = run_quick("system_collection.py", timeout=120)

    assert done.returncode == 0, done.stderr
    ours = r"^\| otel_monitoring \(all groups\) \| (\d+\.\d\d) \| \d+\.\d\d \| (\d+) \| 1\.00 \|$"
    match = re.search(ours, done.stdout, re.MULTILINE)
    assert match is not None, f"no figure for ours in:\n{done.stdout}"
    assert float(match.group(1)) > 0 and int(match.group(2)) > 0
    # scripts/bootstrap installs the peer, so it is always measured
    peer = r"^\| peer \(default config\) \| \d+\.\d\d \| \d+\.\d\d \| \d+ \| \d+\.\d\d \|$"
    assert re.search(peer, done.stdout, re.MULTILINE), done.stdout


def test_database_overhead_quick_run_reports_us_per_query_for_bare_ours_and_the_peer() -> None:
    done = run_quick("database_overhead.py", timeout=90)

    assert done.returncode == 0, done.stderr
    case = re.escape('conn.execute(text("SELECT 1"))')
    figures = {}
    for contender in ("bare", "otel_monitoring", "opentelemetry-instrumentation-sqlalchemy"):
        match = re.search(rf"^\| {case} \| {re.escape(contender)} \| (\d+\.\d\d) \| ", done.stdout, re.MULTILINE)
        assert match is not None, f"no figure for {contender} in:\n{done.stdout}"
        figures[contender] = float(match.group(1))
    assert all(value > 0 for value in figures.values())
    # The peer makes a span per query: slower than ours in any run, quick or not.
    assert figures["opentelemetry-instrumentation-sqlalchemy"] > figures["otel_monitoring"]


def test_sidecar_series_memory_quick_run_keeps_at_most_half_of_prometheus_client_per_series() -> None:
    done = run_quick("sidecar_series_memory.py", timeout=120)

    assert done.returncode == 0, done.stderr
    rows = dict(re.findall(r"^\| (\w+, 1 worker) \| [\d,]+ \| [\d,]+ \| (\d+\.\d\d) \|$", done.stdout, re.MULTILINE))
    assert set(rows) == {"counter, 1 worker", "histogram, 1 worker"}, done.stdout
    assert all(float(ratio) <= 0.5 for ratio in rows.values()), rows  # the target
    render = re.search(r"^\| otel_monitoring render\(\) \| (\d+\.\d) \| (\d+\.\d\d) \|$", done.stdout, re.MULTILINE)
    assert render is not None and float(render.group(1)) > 0, done.stdout


def test_sidecar_throughput_quick_run_reports_points_per_s_beside_the_python_ceiling() -> None:
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        pytest.skip("wrk and taskset drive and pin the load (Debian packages 'wrk' and 'util-linux')")
    done = run_quick("sidecar_throughput.py", timeout=60)

    assert done.returncode == 0, done.stderr
    ours = re.search(
        r"^\| otel_monitoring sidecar \(default pipeline\) \| (\d+) \| 1\.00 \| [\d.]+ \| ok \|$", done.stdout, re.M
    )
    ceiling = re.search(
        r"^\| Python ceiling \(upb parse \+ read every point\) \| (\d+) \| (\d\.\d\d) \| \| \|$", done.stdout, re.M
    )
    assert ours is not None and ceiling is not None, done.stdout
    assert int(ours.group(1)) > 0 and int(ceiling.group(1)) > 0
    assert float(ceiling.group(2)) == pytest.approx(int(ours.group(1)) / int(ceiling.group(1)), abs=0.01)
    # rotel is optional in quick mode: measured when .venv/peers/rotel has it, else said to be missing
    assert re.search(
        r"^\| rotel \S+ \(blackhole\) \| (\d+ \| \d\.\d\d \| [\d.]+|not installed \| \|) \| \|$", done.stdout, re.M
    ), done.stdout
