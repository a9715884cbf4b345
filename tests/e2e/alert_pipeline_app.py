"""A content-generation service with the monitoring installed, and its alerts as code, for test_alert_pipeline.py.

``GET /generate`` answers 200 until ``PUT /fault?failing=true&delay_seconds=0.3`` makes it wait and answer 503,
as when the model provider times out; ``PUT /fault?failing=false`` heals it. ``PUT /backlog?depth=N`` sets the
``generation_queue_depth`` gauge. The middleware measures every request; ``/metrics`` serves the exposition.

The alerts are the seed's ``high_error_rate`` registered with ``alerts.register`` (found by ``--app
tests.e2e.alert_pipeline_app``), over the middleware's request histogram with a window short enough for a test,
and ``backlog_rules``: a critical and a warning rule with one alert name and one expression (``--app
tests.e2e.alert_pipeline_app:backlog_rules``), as an SLO's page and ticket are, to show inhibition.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.responses import JSONResponse

from otel_monitoring import alerts, exporter, metrics

WINDOW = "10s"
"""Rate window of the rules: the built-in pack's 5m, shortened so the test fires and resolves in seconds."""
ERROR_RATIO = 0.1
BACKLOG_LIMIT = 100

app = FastAPI()
app.add_middleware(exporter.PrometheusMiddleware)
app.add_route("/metrics", exporter.metrics_endpoint)

queue_depth = metrics.gauge("generation_queue_depth", "Content generations waiting for a model")


@dataclass
class Fault:
    failing: bool = False
    delay_seconds: float = 0.0


fault = Fault()


@app.get("/generate")
async def generate() -> JSONResponse:
    if fault.failing:
        await asyncio.sleep(fault.delay_seconds)
        # Answered, not raised: an exception's traceback on stderr is noise the test would have to drain.
        return JSONResponse({"error": "model provider unavailable"}, status_code=503)
    return JSONResponse({"text": "generated"})


@app.put("/fault")
async def set_fault(failing: bool, delay_seconds: float = 0.0) -> dict[str, object]:
    fault.failing, fault.delay_seconds = failing, delay_seconds
    return {"failing": failing, "delay_seconds": delay_seconds}


@app.put("/backlog")
async def set_backlog(depth: int) -> dict[str, int]:
    queue_depth.set(depth)
    return {"depth": depth}


_REQUESTS = "http_server_request_duration_seconds_count"

alerts.register(
    alerts.Alert(
        name="high_error_rate",
        query=(
            f'sum by (job) (rate({_REQUESTS}{{http_response_status_code=~"5.."}}[{WINDOW}]))\n'
            f"/\nsum by (job) (rate({_REQUESTS}[{WINDOW}]))\n> {ERROR_RATIO:g}"
        ),
        severity="critical",
        for_="1s",
        annotations={
            "summary": "Alta taxa de erros em {{ $labels.job }}",
            "description": f"Mais de {ERROR_RATIO:.0%} das requisições de {{{{ $labels.job }}}} falharam "
            f"nos últimos {WINDOW}",
        },
        runbook_url="https://wiki.example/runbooks/high_error_rate",
    )
)

_BACKLOG = f"max by (job) (generation_queue_depth) > {BACKLOG_LIMIT}"
backlog_rules = alerts.RuleGroup(
    name="generation-backlog",
    rules=[
        alerts.Alert(
            name="GenerationBacklog",
            query=_BACKLOG,
            severity=severity,
            annotations={
                "summary": f"{{{{ $labels.job }}}}: backlog ({severity})",
                "description": f"More than {BACKLOG_LIMIT} generations are waiting in {{{{ $labels.job }}}}.",
            },
        )
        for severity in ("critical", "warning")
    ],
)
