"""The demo's traffic: a plan saying what happens when (normal operation, failure episodes), the mix of requests
customers send, and a driver sending them at a steady rate in a background thread.

The plan is a pure function of the seconds since traffic started, so it is tested without waiting:

>>> plan = TrafficPlan.for_duration(30)
>>> plan.phase_at(1).name, plan.phase_at(10).name, plan.phase_at(25).name
('normal', 'failure', 'normal')
>>> plan.describe()
'failure episode from 6 s to 16 s'
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from otel_monitoring.demo.customers import CUSTOMERS, Customer

__all__ = [
    "FAILURE",
    "NORMAL",
    "Episode",
    "Phase",
    "PlannedRequest",
    "RequestMix",
    "TrafficDriver",
    "TrafficPlan",
]


@dataclass(frozen=True)
class Phase:
    """How the model provider behaves for a while: the share of calls it fails and the latency it adds."""

    name: str
    error_ratio: float
    extra_latency: float
    """Seconds added to each call, on average."""


NORMAL = Phase("normal", error_ratio=0.0, extra_latency=0.0)
FAILURE = Phase("failure", error_ratio=0.6, extra_latency=0.35)
"""The provider overloaded: 6 calls in 10 fail with 503 after waiting, as overloaded LLM APIs do. Generations are
most of the traffic, so well over 10% of the service's requests fail and its p95 passes 250 ms."""


@dataclass(frozen=True)
class Episode:
    """A failure from ``start`` seconds for ``length`` seconds."""

    start: float
    length: float

    @property
    def end(self) -> float:
        return self.start + self.length


@dataclass(frozen=True)
class TrafficPlan:
    """Requests per second, and when the failure episodes happen.

    ``every`` repeats the episodes with that period, for a demo that runs until Ctrl-C.

    >>> TrafficPlan.for_duration(None).phase_at(150 + 20).name  # the second cycle's episode
    'failure'
    >>> TrafficPlan.steady().phase_at(1e6).name
    'normal'
    """

    rate: float = 20.0
    episodes: tuple[Episode, ...] = ()
    every: float | None = None
    failure: Phase = FAILURE

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate: must be > 0 requests per second (got {self.rate})")
        if self.every is not None and any(episode.end > self.every for episode in self.episodes):
            raise ValueError(f"every: each episode must end within the period of {self.every:g} s")

    @classmethod
    def steady(cls, rate: float = 20.0) -> TrafficPlan:
        """Normal traffic only; :meth:`DemoStack.failure_episode` makes failures when a caller wants them."""
        return cls(rate=rate)

    @classmethod
    def for_duration(cls, duration: float | None, rate: float = 20.0) -> TrafficPlan:
        """The demo's plan: one failure episode placed so that its alert fires, is delivered, and (given time)
        resolves within ``duration`` seconds; with no duration, an episode every 150 s.

        The episode starts after 20% of the run (at least 5 s, so the baselines exist; at most 20 s) and lasts
        35% of it (8 to 30 s): long enough for a 10 s error-rate window to cross its threshold and hold for the
        alert's ``for``, short enough to leave the rest of the run for the resolution.

        >>> [(e.start, e.length) for e in TrafficPlan.for_duration(100).episodes]
        [(20.0, 30.0)]
        """
        if duration is None:
            return cls(rate=rate, episodes=(Episode(15.0, 20.0),), every=150.0)
        start = min(max(0.2 * duration, 5.0), 20.0)
        length = min(max(0.35 * duration, 8.0), 30.0)
        return cls(rate=rate, episodes=(Episode(float(round(start)), float(round(length))),))

    def phase_at(self, elapsed: float) -> Phase:
        """The phase ``elapsed`` seconds after traffic started."""
        at = elapsed % self.every if self.every is not None else elapsed
        if any(episode.start <= at < episode.end for episode in self.episodes):
            return self.failure
        return NORMAL

    def describe(self) -> str:
        """One phrase for the console: when failures happen."""
        if not self.episodes:
            return "no failure episode planned"
        spans = ", ".join(f"from {e.start:g} s to {e.end:g} s" for e in self.episodes)
        repeat = f", again every {self.every:g} s" if self.every is not None else ""
        return f"failure episode {spans}{repeat}"


@dataclass(frozen=True)
class PlannedRequest:
    """One request the driver sends: method, path and JSON body."""

    method: str
    path: str
    body: dict[str, Any] | None = None


@dataclass
class RequestMix:
    """What customers send: mostly generations, some feedback (unhappy customers score low, everyone scores low
    while the service fails), some usage look-ups, and now and then an unknown customer (a 404).

    >>> mix = RequestMix(rng=random.Random(7))
    >>> {mix.next(NORMAL).path.split("/")[2] for _ in range(200)} >= {"generations", "feedback", "customers"}
    True
    """

    customers: Sequence[Customer] = CUSTOMERS
    rng: random.Random = field(default_factory=random.Random)

    def _customer(self) -> Customer:
        return self.rng.choices(self.customers, weights=[c.weight for c in self.customers])[0]

    def next(self, phase: Phase) -> PlannedRequest:
        draw = self.rng.random()
        customer = self._customer()
        if draw < 0.70:
            content_type = self.rng.choice(("article", "article", "caption", "summary", "translation"))
            words = self.rng.choice((80, 150, 300, 600))
            body = {"customer": customer.id, "content_type": content_type, "words": words}
            return PlannedRequest("POST", "/v1/generations", body)
        if draw < 0.85:
            score = self.rng.choice(customer.scores) if phase.error_ratio == 0 else self.rng.choice((1, 1, 2))
            return PlannedRequest("POST", "/v1/feedback", {"customer": customer.id, "score": score})
        if draw < 0.99:
            return PlannedRequest("GET", f"/v1/customers/{customer.id}/usage")
        return PlannedRequest("GET", "/v1/customers/nobody-we-know/usage")


class TrafficDriver:
    """Sends the mix to ``base_url`` at ``plan.rate`` requests per second from a background thread.

    An open loop, as real users are: a request leaves on schedule whether or not earlier ones have been answered,
    so a slow service piles up in-flight requests instead of quietly getting less traffic. ``phase()`` is read
    before each request (the stack points it at the plan, or at a forced episode).
    """

    def __init__(
        self,
        base_url: str,
        plan: TrafficPlan,
        phase: Callable[[], Phase],
        *,
        mix: RequestMix | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_in_flight: int = 200,
    ) -> None:
        self.base_url = base_url
        self.plan = plan
        self.phase = phase
        self.mix = mix or RequestMix()
        self._clock = clock
        self._max_in_flight = max_in_flight
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.statuses: Counter[int] = Counter()
        """Answers by HTTP status (0: no answer: connection error or timeout)."""
        self.started_at: float | None = None
        self._thread = threading.Thread(target=self._run_loop, name="demo-traffic", daemon=True)

    def start(self) -> None:
        self.started_at = self._clock()
        self._thread.start()

    def elapsed(self) -> float:
        """Seconds since :meth:`start` (0 before)."""
        return 0.0 if self.started_at is None else self._clock() - self.started_at

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run_loop(self) -> None:
        asyncio.run(self._run())

    async def _send(self, client: Any, request: PlannedRequest) -> None:
        import httpx

        try:
            response = await client.request(request.method, request.path, json=request.body)
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        with self._lock:
            self.statuses[status] += 1

    async def _run(self) -> None:
        import httpx

        interval = 1.0 / self.plan.rate
        limits = httpx.Limits(max_connections=self._max_in_flight, max_keepalive_connections=50)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5.0, limits=limits) as client:
            pending: set[asyncio.Task[None]] = set()
            next_at = time.monotonic()
            while not self._stop.is_set():
                if len(pending) < self._max_in_flight:
                    task = asyncio.create_task(self._send(client, self.mix.next(self.phase())))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            for task in list(pending):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pending, return_exceptions=True)

    def answered(self) -> dict[int, int]:
        """A copy of :attr:`statuses`."""
        with self._lock:
            return dict(self.statuses)
