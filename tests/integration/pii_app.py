"""An app that records personal data in labels, as careless code does; the default pipeline must clean it."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from otel_monitoring import exporter, metrics

logins = metrics.counter("logins_total", "Logins", labelnames=("email", "client_id", "plan"))


async def login(request: Request) -> PlainTextResponse:
    logins.labels(email=request.query_params["email"], client_id=request.query_params["client"], plan="pro").inc()
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/login", login)])
app.add_middleware(exporter.PrometheusMiddleware)
app.add_route("/metrics", exporter.metrics_endpoint)
