"""The demo's traffic plan (when failures happen) and request mix (what customers send), without any server."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from otel_monitoring.demo.customers import CUSTOMERS
from otel_monitoring.demo.traffic import FAILURE, NORMAL, Episode, RequestMix, TrafficPlan


def _phases(plan: TrafficPlan, seconds: float, step: float = 0.5) -> list[tuple[float, str]]:
    return [(index * step, plan.phase_at(index * step).name) for index in range(int(seconds / step))]


@pytest.mark.parametrize("duration", [10.0, 30.0, 45.0, 100.0, 600.0])
def test_a_run_of_given_length_has_one_failure_episode_that_starts_after_a_baseline(duration: float) -> None:
    plan = TrafficPlan.for_duration(duration)
    [episode] = plan.episodes
    phases = _phases(plan, duration)
    failing = [at for at, name in phases if name == "failure"]
    assert failing, f"no failure within {duration} s"
    assert failing[0] == pytest.approx(episode.start, abs=0.5)
    assert episode.start >= 5.0  # Prometheus needs a few scrapes of normal traffic first
    assert all(name == "normal" for at, name in phases if at < episode.start or at >= episode.end)


def test_the_30_second_run_leaves_time_after_the_episode_for_the_alert_to_resolve() -> None:
    plan = TrafficPlan.for_duration(30)
    [episode] = plan.episodes
    assert episode.length >= 8.0  # a 10 s error-rate window crosses 10% and holds for its `for`
    assert 30 - episode.end >= 10.0  # the window empties of errors again before the run ends


def test_an_open_ended_run_repeats_its_episode_every_period() -> None:
    plan = TrafficPlan.for_duration(None)
    assert plan.every is not None
    [episode] = plan.episodes
    for cycle in range(3):
        offset = cycle * plan.every
        assert plan.phase_at(offset + episode.start) is plan.failure
        assert plan.phase_at(offset + episode.end) is NORMAL
        assert plan.phase_at(offset + episode.start - 0.1) is NORMAL


def test_steady_traffic_never_fails_and_keeps_its_rate() -> None:
    plan = TrafficPlan.steady(rate=33)
    assert plan.rate == 33
    assert {name for _, name in _phases(plan, 1000, step=7.3)} == {"normal"}


def test_describe_names_every_episode_and_the_repeat() -> None:
    plan = TrafficPlan(episodes=(Episode(3, 4), Episode(20, 5)), every=60)
    assert plan.describe() == "failure episode from 3 s to 7 s, from 20 s to 25 s, again every 60 s"
    assert TrafficPlan.steady().describe() == "no failure episode planned"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0}, "rate: must be > 0"),
        ({"episodes": (Episode(50, 20),), "every": 60}, "every: each episode must end within the period"),
    ],
)
def test_a_plan_that_cannot_run_is_refused_naming_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrafficPlan(**kwargs)  # type: ignore[arg-type]


def test_the_failure_phase_fails_calls_and_slows_them_and_the_normal_one_does_neither() -> None:
    assert NORMAL.error_ratio == 0 and NORMAL.extra_latency == 0
    # More than the 10% the error-rate alerts look for, even diluted by the requests that call no model.
    assert FAILURE.error_ratio * 0.70 > 0.1
    assert FAILURE.extra_latency > 0.25


def test_the_mix_is_mostly_generations_from_every_customer_by_weight() -> None:
    mix = RequestMix(rng=random.Random(42))
    requests = [mix.next(NORMAL) for _ in range(4000)]
    kinds = Counter(request.path.split("/")[2] for request in requests)
    assert kinds["generations"] / len(requests) == pytest.approx(0.70, abs=0.03)
    customers = Counter(request.body["customer"] for request in requests if request.body)
    total_weight = sum(customer.weight for customer in CUSTOMERS)
    heaviest = max(CUSTOMERS, key=lambda customer: customer.weight)
    assert set(customers) == {customer.id for customer in CUSTOMERS}
    share = customers[heaviest.id] / sum(customers.values())
    assert share == pytest.approx(heaviest.weight / total_weight, abs=0.04)


def test_feedback_follows_each_customers_mood_and_drops_for_everyone_during_a_failure() -> None:
    moods = {customer.id: set(customer.scores) for customer in CUSTOMERS}
    mix = RequestMix(rng=random.Random(3))

    def scores(phase_name: str) -> list[tuple[str, int]]:
        phase = NORMAL if phase_name == "normal" else FAILURE
        found = [mix.next(phase) for _ in range(3000)]
        return [(r.body["customer"], r.body["score"]) for r in found if r.path == "/v1/feedback" and r.body]

    normal = scores("normal")
    assert normal and all(score in moods[customer] for customer, score in normal)
    unhappy = {customer.id for customer in CUSTOMERS if max(customer.scores) <= 3}
    assert unhappy, "the demo needs unhappy customers"
    assert {customer for customer, _ in normal} >= unhappy
    during_failure = scores("failure")
    assert during_failure and max(score for _, score in during_failure) <= 2


def test_some_requests_ask_for_an_unknown_customer() -> None:
    mix = RequestMix(rng=random.Random(5))
    paths = {mix.next(NORMAL).path for _ in range(3000)}
    known = {f"/v1/customers/{customer.id}/usage" for customer in CUSTOMERS}
    unknown = {path for path in paths if path.startswith("/v1/customers/") and path not in known}
    assert unknown  # answered 404: a client error, which the error-rate alerts must not count
