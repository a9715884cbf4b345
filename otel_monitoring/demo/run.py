"""``otel-monitoring demo``: start the stack, show the live view every second, stop cleanly, print a summary.

How long it runs: ``duration`` seconds of traffic (the start-up before it is not counted); with no duration, until
Ctrl-C on a terminal, and 60 s when the output is not a terminal (CI, a pipe), so that it never waits forever for
a key nobody can press. SIGTERM and SIGHUP stop it like Ctrl-C.
"""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import TextIO

from otel_monitoring.demo.customers import CUSTOMERS
from otel_monitoring.demo.stack import SERVICE, DebianBinaries, DemoError, DemoStack
from otel_monitoring.demo.traffic import TrafficPlan
from otel_monitoring.demo.view import LiveView, ViewState

__all__ = ["NON_INTERACTIVE_DURATION", "run_demo"]

NON_INTERACTIVE_DURATION = 60.0
"""Seconds the demo runs when given no duration and its output is not a terminal."""


@contextlib.contextmanager
def _signals_stop() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does, so every way of stopping cleans up the same."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {number: signal.signal(number, interrupt) for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def _uninterruptible() -> Iterator[None]:
    """While the stack stops, another Ctrl-C must not leave half of it running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    numbers = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_demo(
    *,
    duration: float | None,
    rate: float = 20.0,
    service_port: int = 0,
    out: TextIO | None = None,
    interactive: bool | None = None,
    binaries: DebianBinaries | None = None,
) -> int:
    """Run the demo and return the exit status: 0 after a clean stop, 1 when something could not start."""
    out = out or sys.stdout
    interactive = out.isatty() if interactive is None else interactive
    if duration is None and not interactive:
        duration = NON_INTERACTIVE_DURATION
    if importlib.util.find_spec("fastapi") is None:
        print("otel-monitoring: error: the demo's sample service needs FastAPI (pip install fastapi)", file=sys.stderr)
        return 1

    def say(line: str = "") -> None:
        out.write(line + "\n")
        out.flush()

    binaries = binaries if binaries is not None else DebianBinaries.find()
    plan = TrafficPlan.for_duration(duration, rate)
    running = ["the sample service", "the collector sidecar"]
    running += [name for name, path in (("Prometheus", binaries.prometheus), ("Alertmanager", binaries.alertmanager),
                                        ("Pushgateway", binaries.pushgateway)) if path is not None]  # fmt: skip
    say(f"otel-monitoring demo: starting {', '.join(running[:-1])} and {running[-1]} on 127.0.0.1…")
    missing = binaries.describe_missing()
    if missing:
        say(missing)

    launched = time.monotonic()
    stack = DemoStack(plan=plan, binaries=binaries, service_port=service_port)
    first_figures: float | None = None
    first_delivery: tuple[float, str] | None = None
    interrupted = False
    try:
        with _signals_stop():
            stack.start()
            assert stack.traffic is not None and stack.traffic.started_at is not None
            began = stack.traffic.started_at
            urls = [f"  {name:<18} {url}" for name, url in stack.urls().items()]
            say(f"ready in {began - launched:.1f} s. Open:")
            for line in urls:
                say(line)
            stop_how = "Ctrl-C to stop" if duration is None else f"stops after {duration:g} s (Ctrl-C stops sooner)"
            say(f"traffic: {rate:g} requests/s from {len(CUSTOMERS)} customers; {plan.describe()}; {stop_how}")
            say()
            footer = ["open:", *urls, "", stop_how]
            view = LiveView(out, redraw=interactive, footer=footer)
            tick = began
            while duration is None or time.monotonic() - began < duration:
                figures = stack.read_figures()
                delivered = tuple((n.received - began, n) for n in stack.notifications())
                now = time.monotonic()
                if first_figures is None and figures.live:
                    first_figures = now - began
                if first_delivery is None and delivered:
                    first_delivery = (delivered[0][0], delivered[0][1].title)
                view.update(ViewState(now - began, stack.current_phase().name, figures, delivered, duration, SERVICE))
                tick += 1.0
                time.sleep(max(0.0, tick - time.monotonic()))
    except KeyboardInterrupt:
        interrupted = True
    except DemoError as error:
        with _uninterruptible():
            stack.close()
        print(f"otel-monitoring: error: {error}", file=sys.stderr)
        return 1
    answered = stack.traffic.answered() if stack.traffic is not None else {}
    say()
    say("stopping…" if not interrupted else "interrupted: stopping…")
    data_dir = stack.data_dir
    with _uninterruptible():
        stack.close()
    total = sum(answered.values())
    errors = sum(count for status, count in answered.items() if status >= 500 or status == 0)
    say(f"summary: {total} requests answered, {errors} failed; started in {_startup_seconds(stack, launched):.1f} s")
    if first_figures is not None:
        say(f"first figures {first_figures:.1f} s after traffic began")
    if first_delivery is not None:
        say(f"first alert delivered {first_delivery[0]:.1f} s after traffic began: {first_delivery[1]}")
    elif stack.alertmanager_url is not None:
        say(f"no alert was delivered ({plan.describe()}; alerts reach the sink about 7 s into an episode)")
    alive = [child.name for child in stack.children() if child.process.poll() is None]
    if alive:
        print(f"otel-monitoring: error: still running after the stop: {', '.join(alive)}", file=sys.stderr)
        return 1
    gone = "" if data_dir is None or data_dir.exists() else f"; removed {data_dir}"
    say(f"stopped: every process the demo started has exited{gone}")
    return 0


def _startup_seconds(stack: DemoStack, launched: float) -> float:
    """Seconds from launch to traffic start (0 if traffic never started)."""
    if stack.traffic is None or stack.traffic.started_at is None:
        return 0.0
    return stack.traffic.started_at - launched
