"""Collectors: what a service measures besides its HTTP requests.

- ``system``: host, process, container (cgroup) and Kubernetes resources, and network latency probes,
  as asynchronous instruments read when a reader collects.
- ``database``: SQLAlchemy query metrics through SQLAlchemy's events.
- ``cache``: the cache API (``metrics.cache("sessions")``) and redis-py.
- ``http_client``: outgoing httpx requests.

Under ``opentelemetry-instrument`` each is switched on by its instrumentor entry point
(``otel_monitoring_system``, ``otel_monitoring_sqlalchemy``, ``otel_monitoring_redis``,
``otel_monitoring_httpx``), which ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` or a ``collectors.*`` setting
turns off.
"""
