"""With no configuration, personal data never reaches /metrics, and customer ids become stable pseudonyms."""

from __future__ import annotations

import re

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import free_port, running, uvicorn_argv

KEY = {"OTEL_MONITORING_PSEUDONYM_KEY": "test-key-0123456789abcdef"}


def serve_and_scrape(env: dict[str, str]) -> tuple[str, str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(uvicorn_argv("tests.integration.pii_app:app", port), f"{base}/metrics", env=env):
        for email in ("ana.silva@example.com", "bob@example.org"):
            assert httpx.get(f"{base}/login", params={"email": email, "client": "acme-corp-42"}).status_code == 200
        assert httpx.get(f"{base}/users/carol@example.net/profile").status_code == 404
        first = httpx.get(f"{base}/metrics").text
        second = httpx.get(f"{base}/metrics").text
    return first, second


def logins_by_client(exposition: str) -> dict[str, float]:
    return {
        sample.labels["client_id"]: sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "logins_total"
    }


def test_emails_never_reach_metrics_and_collisions_merge() -> None:
    first, _ = serve_and_scrape(KEY)
    assert not re.search(r"[\w.]+@example\.(com|org|net)", first)
    assert "carol" not in first
    emails = {
        sample.labels["email"]
        for family in text_string_to_metric_families(first)
        for sample in family.samples
        if sample.name == "logins_total"
    }
    assert len(emails) == 1  # both addresses became the same marker: one series, never two
    assert sum(logins_by_client(first).values()) == 2


def test_customer_ids_come_out_as_the_same_pseudonym_every_time() -> None:
    first, second = serve_and_scrape(KEY)
    again, _ = serve_and_scrape(KEY)  # another process with the same key
    pseudonyms = set(logins_by_client(first)) | set(logins_by_client(second)) | set(logins_by_client(again))
    assert len(pseudonyms) == 1
    [pseudonym] = pseudonyms
    assert "acme" not in pseudonym and pseudonym
    assert "acme-corp-42" not in first + second + again
