"""The demo's figures from the sidecar's scrape alone: rates and p95 from successive expositions, the way
PromQL's rate() and histogram_quantile() read them, and costs per customer."""

from __future__ import annotations

import math

import pytest

from otel_monitoring.demo.figures import QUERIES, ScrapeReader, histogram_quantile

JOB = "content-api"
BOUNDS = (0.05, 0.1, 0.25, 0.5, math.inf)


def _exposition(
    ok: dict[float, int], failed: dict[float, int], costs: dict[str, float], *, job: str = JOB, other_job: int = 0
) -> str:
    """A sidecar exposition: the request histogram split by status (observations per bucket bound, not
    cumulative), the derived cost per customer, and a series of another job that must be ignored."""
    lines = ["# TYPE http_server_request_duration_seconds histogram"]
    for status, observations in (("200", ok), ("502", failed)):
        labels = f'job="{job}",http_route="/v1/generations",http_response_status_code="{status}"'
        cumulative = 0
        for bound in BOUNDS:
            cumulative += observations.get(bound, 0)
            le = "+Inf" if math.isinf(bound) else repr(bound)
            lines.append(f'http_server_request_duration_seconds_bucket{{{labels},le="{le}"}} {cumulative}')
        lines.append(f"http_server_request_duration_seconds_count{{{labels}}} {cumulative}")
        lines.append(f"http_server_request_duration_seconds_sum{{{labels}}} 1.0")
    lines.append(
        'http_server_request_duration_seconds_count{job="other",http_response_status_code="500"} ' + str(other_job)
    )
    lines.append("# TYPE otel_monitoring_business_cost_USD counter")
    for customer, usd in costs.items():
        lines.append(f'otel_monitoring_business_cost_USD_total{{job="{job}",client_id="{customer}"}} {usd}')
    return "\n".join(lines) + "\n# EOF\n"


def test_rates_error_ratio_and_p95_come_from_the_increase_between_two_scrapes() -> None:
    reader = ScrapeReader("http://unused", JOB, window=10.0)
    before_ok, before_failed = {0.05: 40, 0.1: 10}, {0.5: 2}
    reader.observe(_exposition(before_ok, before_failed, {}, other_job=5), at=100.0)
    added_ok, added_failed = {0.05: 30, 0.1: 20}, {0.25: 5, 0.5: 15}
    after_ok = {bound: before_ok.get(bound, 0) + added_ok.get(bound, 0) for bound in BOUNDS}
    after_failed = {bound: before_failed.get(bound, 0) + added_failed.get(bound, 0) for bound in BOUNDS}
    reader.observe(_exposition(after_ok, after_failed, {}, other_job=500), at=104.0)

    figures = reader.figures()
    added = sum(added_ok.values()) + sum(added_failed.values())
    assert figures.requests_per_second == pytest.approx(added / 4.0)
    assert figures.error_ratio == pytest.approx(sum(added_failed.values()) / added)
    increases: dict[float, float] = {}
    running = 0
    for bound in BOUNDS:
        running += added_ok.get(bound, 0) + added_failed.get(bound, 0)
        increases[bound] = running
    assert figures.p95_seconds == pytest.approx(histogram_quantile(0.95, increases))
    assert figures.source == "sidecar /metrics"


def test_one_scrape_gives_costs_but_no_rates_yet() -> None:
    reader = ScrapeReader("http://unused", JOB)
    costs = {"u_aaaa": 0.5, "u_bbbb": 1.25, "u_cccc": 0.01}
    reader.observe(_exposition({0.05: 3}, {}, costs), at=1.0)
    figures = reader.figures()
    assert figures.requests_per_second is None and figures.p95_seconds is None and not figures.live
    assert figures.costs == tuple(sorted(costs.items(), key=lambda pair: -pair[1]))


def test_costs_keep_the_five_highest_customers() -> None:
    reader = ScrapeReader("http://unused", JOB)
    costs = {f"u_{index:04d}": float(index) for index in range(8)}
    reader.observe(_exposition({}, {}, costs), at=1.0)
    assert [customer for customer, _ in reader.figures().costs] == sorted(costs, key=costs.__getitem__)[::-1][:5]


def test_rates_cover_the_window_and_forget_older_scrapes() -> None:
    reader = ScrapeReader("http://unused", JOB, window=5.0)
    # 10 requests per second for 20 s, then 50 per second: after 5 s at the new rate only it is shown.
    total = 0
    for second in range(0, 31):
        total += 10 if second <= 20 else 50
        reader.observe(_exposition({0.05: total}, {}, {}), at=float(second))
    assert reader.figures().requests_per_second == pytest.approx(50.0)
    assert reader.figures().error_ratio == 0.0


def test_a_counter_reset_reads_as_no_traffic_rather_than_negative() -> None:
    reader = ScrapeReader("http://unused", JOB)
    reader.observe(_exposition({0.05: 100}, {}, {}), at=0.0)
    reader.observe(_exposition({0.05: 3}, {}, {}), at=1.0)  # the service restarted
    assert reader.figures().requests_per_second == 0.0


def test_read_fetches_with_the_injected_function_and_clock_and_survives_a_failed_scrape() -> None:
    bodies = iter([_exposition({0.05: 10}, {}, {}), _exposition({0.05: 30}, {}, {}), "not an exposition {"])
    times = iter([0.0, 2.0, 3.0])
    reader = ScrapeReader("http://sidecar/metrics", JOB, clock=lambda: next(times), fetch=lambda url: next(bodies))
    reader.read()
    second = reader.read()
    assert second.requests_per_second == pytest.approx((30 - 10) / 2.0)
    assert reader.read() == second  # a bad scrape keeps the last figures


@pytest.mark.parametrize(
    ("buckets", "q"),
    [({0.1: 5, 0.2: 10, math.inf: 10}, 0.5), ({0.1: 0, 0.5: 100, math.inf: 100}, 0.95), ({1.0: 4, math.inf: 4}, 0.25)],
)
def test_histogram_quantile_interpolates_inside_the_bucket_holding_the_rank(
    buckets: dict[float, float], q: float
) -> None:
    ordered = sorted(buckets.items())
    rank = q * ordered[-1][1]
    lower, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            expected = lower + (bound - lower) * (rank - lower_count) / (count - lower_count)
            break
        lower, lower_count = bound, count
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


def test_histogram_quantile_in_the_inf_bucket_is_the_highest_finite_bound_as_in_promql() -> None:
    assert histogram_quantile(0.99, {0.1: 1, 0.5: 2, math.inf: 100}) == 0.5


def test_the_view_queries_are_filled_for_the_service() -> None:
    filled = {
        name: query.format(job=JOB, window="5s", requests="r", cost="c", top="5") for name, query in QUERIES.items()
    }
    assert all(f'job="{JOB}"' in query for query in filled.values())
    assert "or vector(0)" in filled["error_ratio"]  # no 5xx series means 0%, not no data
