"""``otel-monitoring demo`` and the stack behind it, reusable from tests (docs/demo.md).

- :class:`DemoStack`: the sample service under ``opentelemetry-instrument``, the collector sidecar, Debian's
  Prometheus, Alertmanager and Pushgateway when installed, a fake model provider, an alert sink and traffic, all on
  127.0.0.1, as a context manager that leaves nothing behind.
- :class:`TrafficPlan`: the rate and the failure episodes.
- :func:`run_demo`: the command (stack, live view, summary).

A test that needs a Prometheus full of realistic data::

    from otel_monitoring.demo import DemoStack, TrafficPlan

    with DemoStack(plan=TrafficPlan.steady(rate=30)) as stack:
        with stack.failure_episode():
            time.sleep(10)
        httpx.get(f"{stack.prometheus_url}/api/v1/query", params={"query": "up"})

Modules: ``stack`` (processes and configs), ``traffic`` (plan, request mix, driver), ``figures`` (PromQL and scrape
readings), ``view`` (the terminal view), ``app`` (the sample service), ``rules`` (the demo's short-window alerts),
``stubs`` (fake model provider, alert sink), ``batch`` (the Pushgateway job), ``customers``.
"""

from otel_monitoring.demo.figures import AlertState, Figures
from otel_monitoring.demo.run import run_demo
from otel_monitoring.demo.stack import SERVICE, DebianBinaries, DemoError, DemoStack
from otel_monitoring.demo.traffic import FAILURE, NORMAL, Episode, Phase, TrafficPlan

__all__ = [
    "FAILURE",
    "NORMAL",
    "SERVICE",
    "AlertState",
    "DebianBinaries",
    "DemoError",
    "DemoStack",
    "Episode",
    "Figures",
    "Phase",
    "TrafficPlan",
    "run_demo",
]
