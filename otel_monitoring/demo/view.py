"""The demo's live terminal view, refreshed every second.

On a terminal the whole screen is redrawn (ANSI home and clear: no curses needed); anywhere else (a pipe, a log, CI)
each refresh is one line, and each delivered notification one more. Rendering is pure (:func:`render_screen`,
:func:`render_line`), so it is tested without a terminal:

>>> from otel_monitoring.demo.figures import Figures
>>> state = ViewState(elapsed=12.4, phase="normal", figures=Figures("Prometheus", 19.8, 0.052, 0.0))
>>> render_line(state)
'[   12s] normal   rps 19.8  p95 52 ms  errors 0.0%  top cost -  alerts firing: -  delivered: 0'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from otel_monitoring.demo.figures import Figures
from otel_monitoring.demo.stubs import Notification

__all__ = ["LiveView", "ViewState", "render_delivery", "render_line", "render_screen"]

_CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear the screen: the first frame
_HOME = "\x1b[H"  # later frames overwrite in place (less flicker than clearing)...
_END_OF_LINE = "\x1b[K"  # ...erasing what a longer earlier line left on each line...
_END_OF_SCREEN = "\x1b[J"  # ...and below the last one
_SHOWN_DELIVERIES = 8


@dataclass(frozen=True)
class ViewState:
    """Everything one refresh shows."""

    elapsed: float
    """Seconds since traffic started."""
    phase: str
    """The traffic plan's phase now: ``normal`` or ``failure``."""
    figures: Figures | None
    delivered: tuple[tuple[float, Notification], ...] = ()
    """Notifications the alert sink received, with their second since traffic started."""
    duration: float | None = None
    """The run's length, or ``None`` when it runs until Ctrl-C."""
    service: str = "content-api"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _millis(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _short(pseudonym: str) -> str:
    return pseudonym if len(pseudonym) <= 10 else pseudonym[:9] + "…"


def render_line(state: ViewState) -> str:
    """One refresh as one line, for output that is not a terminal."""
    figures = state.figures or Figures(source="none")
    top = f"{_short(figures.costs[0][0])}=${figures.costs[0][1]:.4f}" if figures.costs else "-"
    firing = ",".join(dict.fromkeys(alert.name for alert in figures.firing())) or "-"  # page and ticket: one name
    return (
        f"[{state.elapsed:5.0f}s] {state.phase:<8} rps {_rate(figures.requests_per_second)}  "
        f"p95 {_millis(figures.p95_seconds)}  errors {_percent(figures.error_ratio)}  top cost {top}  "
        f"alerts firing: {firing}  delivered: {len(state.delivered)}"
    )


def render_delivery(at: float, notification: Notification) -> str:
    """The line announcing one notification received by the sink.

    >>> render_delivery(14.2, Notification(0.0, "[FIRING:1] critical DemoHighErrorRate (content-api)", ""))
    '[   14s] delivered to the alert sink (Slack webhook): [FIRING:1] critical DemoHighErrorRate (content-api)'
    """
    return f"[{at:5.0f}s] delivered to the alert sink (Slack webhook): {notification.title}"


def render_screen(state: ViewState, footer: Sequence[str] = ()) -> list[str]:
    """One refresh as a screen of lines, for a terminal."""
    figures = state.figures
    length = f"{state.elapsed:.0f} s of {state.duration:g}" if state.duration else f"{state.elapsed:.0f} s"
    phase = "FAILURE: the model provider is overloaded" if state.phase == "failure" else state.phase
    lines = [f"otel-monitoring demo · {state.service} · {length} · phase: {phase}", ""]
    if figures is None:
        lines.append("  waiting for the first figures…")
    else:
        lines += [
            f"  figures from {figures.source}",
            f"  requests/s     {_rate(figures.requests_per_second):>10}",
            f"  p95 latency    {_millis(figures.p95_seconds):>10}",
            f"  error rate     {_percent(figures.error_ratio):>10}",
            "",
            "  top costs per customer (pseudonymized, USD since start)",
        ]
        lines += [f"    {customer:<20} ${usd:.4f}" for customer, usd in figures.costs] or ["    -"]
        lines.append("")
        lines.append(f"  alerts in Prometheus     {len(figures.firing())} firing")
        lines += [f"    {alert.state.upper():<8} {alert.severity:<9} {alert.name}" for alert in figures.alerts]
        if figures.alertmanager_active is not None:
            lines.append(f"  active in Alertmanager   {figures.alertmanager_active}")
    lines.append(f"  delivered to the sink    {len(state.delivered)}")
    lines += [f"    +{at:3.0f} s  {notification.title}" for at, notification in state.delivered[-_SHOWN_DELIVERIES:]]
    return [*lines, "", *footer]


class LiveView:
    """Writes each refresh to ``stream``: redrawn in place when ``redraw`` (a terminal), else line by line."""

    def __init__(self, stream: TextIO, *, redraw: bool, footer: Sequence[str] = ()) -> None:
        self.stream = stream
        self.redraw = redraw
        self.footer = list(footer)
        self._announced = 0
        self._drawn = False

    def update(self, state: ViewState) -> None:
        if self.redraw:
            start = _CLEAR if not self._drawn else _HOME
            lines = render_screen(state, self.footer)
            self.stream.write(start + "".join(line + _END_OF_LINE + "\n" for line in lines) + _END_OF_SCREEN)
            self._drawn = True
        else:
            lines = [render_line(state)]
            lines += [render_delivery(at, notification) for at, notification in state.delivered[self._announced :]]
            self.stream.write("\n".join(lines) + "\n")
        self._announced = len(state.delivered)
        self.stream.flush()
