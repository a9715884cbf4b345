"""The demo's live view: one line per refresh off a terminal, a redrawn screen on one, every figure shown."""

from __future__ import annotations

import io
import re

from otel_monitoring.demo.figures import AlertState, Figures
from otel_monitoring.demo.stubs import Notification
from otel_monitoring.demo.view import LiveView, ViewState, render_delivery, render_line, render_screen

FIRING = Notification(100.0, "[FIRING:1] critical DemoHighErrorRate (content-api)", "High error rate")
RESOLVED = Notification(110.0, "[RESOLVED] critical DemoHighErrorRate (content-api)", "")
FIGURES = Figures(
    source="Prometheus",
    requests_per_second=18.25,
    p95_seconds=0.4321,
    error_ratio=0.2468,
    costs=(("u_0123456789abcdef", 0.125), ("u_fedcba9876543210", 0.0625)),
    alerts=(
        AlertState("DemoHighErrorRate", "critical", "firing"),
        AlertState("HTTPAvailabilityBudgetBurn", "critical", "firing"),
        AlertState("HTTPAvailabilityBudgetBurn", "warning", "firing"),
        AlertState("high_error_rate", "critical", "pending"),
    ),
    alertmanager_active=2,
)


def _state(**changes: object) -> ViewState:
    values: dict[str, object] = {"elapsed": 14.6, "phase": "failure", "figures": FIGURES, "duration": 30.0}
    values.update(changes)
    return ViewState(**values)  # type: ignore[arg-type]


def test_a_line_shows_rate_p95_error_rate_top_cost_firing_alerts_and_deliveries() -> None:
    delivered = ((12.0, FIRING),)
    line = render_line(_state(delivered=delivered))
    figures = re.search(r"rps ([\d.]+)  p95 (\d+) ms  errors ([\d.]+)%", line)
    assert figures is not None, line
    assert float(figures.group(1)) == round(FIGURES.requests_per_second or 0, 1)
    assert int(figures.group(2)) == round((FIGURES.p95_seconds or 0) * 1000)
    assert float(figures.group(3)) == round((FIGURES.error_ratio or 0) * 100, 1)
    top_customer, top_cost = FIGURES.costs[0]
    assert f"${top_cost:.4f}" in line and top_customer[:9] in line
    assert f"delivered: {len(delivered)}" in line
    assert line.startswith(f"[{14.6:5.0f}s] failure")


def test_a_line_names_each_firing_alert_once_and_leaves_out_pending_ones() -> None:
    line = render_line(_state())
    firing = line.split("alerts firing: ")[1].split("  ")[0].split(",")
    assert firing == list(dict.fromkeys(alert.name for alert in FIGURES.alerts if alert.state == "firing"))
    assert "high_error_rate" not in firing


def test_a_line_before_the_first_figures_shows_dashes_not_zeros() -> None:
    line = render_line(_state(figures=None))
    assert "rps -  p95 -  errors -  top cost -" in line


def test_a_delivery_line_carries_the_notification_title_and_when_it_came() -> None:
    line = render_delivery(12.4, FIRING)
    assert line.endswith(FIRING.title)
    assert line.startswith(f"[{12.4:5.0f}s] delivered to the alert sink")


def test_the_screen_shows_every_figure_every_top_customer_every_alert_and_the_footer() -> None:
    footer = ["open:", "  Prometheus   http://127.0.0.1:9090"]
    screen = "\n".join(render_screen(_state(delivered=((12.0, FIRING), (24.0, RESOLVED))), footer))
    assert f"{(FIGURES.p95_seconds or 0) * 1000:.0f} ms" in screen
    assert f"{(FIGURES.error_ratio or 0) * 100:.1f}%" in screen
    assert f"{FIGURES.requests_per_second:.1f}" in screen
    for customer, usd in FIGURES.costs:
        assert re.search(rf"{customer}\s+\${usd:.4f}", screen)
    for alert in FIGURES.alerts:
        assert re.search(rf"{alert.state.upper()}\s+{alert.severity}\s+{alert.name}", screen)
    assert f"active in Alertmanager   {FIGURES.alertmanager_active}" in screen
    assert FIRING.title in screen and RESOLVED.title in screen
    assert screen.endswith("\n".join(footer))
    assert f"{14.6:.0f} s of 30" in screen and "FAILURE" in screen


def test_the_screen_without_alertmanager_or_figures_says_so_plainly() -> None:
    without = Figures(source="sidecar /metrics", requests_per_second=3.0)
    screen = render_screen(_state(figures=without, phase="normal", duration=None))
    assert not any("Alertmanager" in line for line in screen)
    assert any("figures from sidecar /metrics" in line for line in screen)
    assert "waiting for the first figures…" in render_screen(_state(figures=None))[2]


def test_off_a_terminal_each_refresh_is_one_line_and_each_delivery_is_announced_once() -> None:
    out = io.StringIO()
    view = LiveView(out, redraw=False)
    view.update(_state(elapsed=1.0))
    view.update(_state(elapsed=2.0, delivered=((1.5, FIRING),)))
    view.update(_state(elapsed=3.0, delivered=((1.5, FIRING), (2.5, RESOLVED))))
    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue()
    assert [line for line in lines if "delivered to the alert sink" in line] == [
        render_delivery(1.5, FIRING),
        render_delivery(2.5, RESOLVED),
    ]
    assert len([line for line in lines if " rps " in line]) == 3


def test_on_a_terminal_the_first_frame_clears_and_later_ones_redraw_in_place() -> None:
    out = io.StringIO()
    view = LiveView(out, redraw=True, footer=["Ctrl-C to stop"])
    view.update(_state(elapsed=1.0))
    first = out.getvalue()
    view.update(_state(elapsed=2.0))
    second = out.getvalue()[len(first) :]
    assert first.startswith("\x1b[H\x1b[2J")
    assert second.startswith("\x1b[H") and "\x1b[2J" not in second
    assert second.endswith("\x1b[J")  # what a taller earlier frame left below is erased
    rendered = [line.removesuffix("\x1b[K") for line in second.removeprefix("\x1b[H").split("\n")[:-1]]
    assert rendered == render_screen(_state(elapsed=2.0), ["Ctrl-C to stop"])
