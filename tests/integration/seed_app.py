"""The seed document's examples, as written apart from the import path, in a FastAPI app."""

from fastapi import FastAPI

from otel_monitoring import alerts, config, exporter, metrics

app = FastAPI()

# Contador simples
requests_total = metrics.counter("http_requests_total", "Total de requisições HTTP")

# Histograma de latência
request_latency = metrics.histogram(
    "http_request_duration_seconds", "Latência das requisições HTTP", buckets=[0.1, 0.5, 1.0, 2.0, 5.0]
)

# Gauge para valores que sobem e descem
active_requests = metrics.gauge("http_requests_active", "Requisições ativas no momento")

app.add_middleware(exporter.PrometheusMiddleware)
app.add_route("/metrics", exporter.metrics_endpoint)

alert = alerts.Alert(
    name="high_error_rate",
    query="rate(http_errors_total[5m]) > 0.1",
    severity="critical",
    annotations={"summary": "Alta taxa de erros", "description": "Taxa de erros > 10% nos últimos 5 minutos"},
)
alerts.register(alert)

config.set_metrics_retention(days=15)
config.configure_exporter(push_gateway="http://127.0.0.1:9", job_name="aiagency-core")
config.configure_alerts(slack_webhook="https://hooks.slack.com/services/T000/B000/XXXX", email="alerts@aiagency.com")


def process_request() -> None:
    requests_total.inc()


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int]:
    active_requests.inc()
    try:
        with request_latency.time():
            process_request()
        return {"item_id": item_id}
    finally:
        active_requests.dec()


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError("simulated failure")


@app.get("/settings")
async def effective_settings() -> dict[str, object]:
    settings = config.get_settings()
    return {
        "retention_days": settings.prometheus.retention_days,
        "push_gateway": settings.pushgateway.url,
        "job_name": settings.pushgateway.job_name,
        "alert_emails": settings.alerting.email,
        "alerts": [a.name for a in alerts.registered()],
    }
