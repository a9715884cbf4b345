"""``otel-monitoring dashboards push`` against a stand-in for Grafana's HTTP API.

No Grafana server can run here (DESIGN.md), so a Starlette app under uvicorn on 127.0.0.1 plays the subset of the
API the push calls: ``GET/POST /api/folders``, ``GET /api/dashboards/uid/<uid>`` and ``POST /api/dashboards/db``
(version bumped on every save, as Grafana does), with bearer-token authentication. It records every request.
"""

from __future__ import annotations

import argparse
import base64
import copy
import io
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from otel_monitoring import dashboards_cli
from otel_monitoring.dashboards import DASHBOARD_UIDS, build_dashboards
from otel_monitoring.dashboards.grafana import GrafanaClient, GrafanaError, dashboard_fingerprint, push_dashboards
from otel_monitoring.settings import MASK
from tests.alerting_support import serve_app

TOKEN = "glsa_test_token_0123456789"


@dataclass
class FakeGrafana:
    """Grafana's folders and dashboards in memory, and the requests it received (method, path)."""

    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    saves: list[dict[str, Any]] = field(default_factory=list)
    # Grafana also takes a user's basic auth, which httpx sends for a URL with user:password@ in it.
    basic_auth: tuple[str, str] | None = None

    def app(self) -> Starlette:
        async def authorize(request: Request) -> JSONResponse | None:
            self.requests.append((request.method, request.url.path))
            accepted = {f"Bearer {TOKEN}"}
            if self.basic_auth is not None:
                accepted.add("Basic " + base64.b64encode(":".join(self.basic_auth).encode()).decode())
            if request.headers.get("authorization") not in accepted:
                return JSONResponse({"message": "invalid API key"}, status_code=401)
            return None

        async def folder(request: Request) -> JSONResponse:
            if (refused := await authorize(request)) is not None:
                return refused
            uid = request.path_params["uid"]
            if uid not in self.folders:
                return JSONResponse({"message": "folder not found"}, status_code=404)
            return JSONResponse(self.folders[uid])

        async def create_folder(request: Request) -> JSONResponse:
            if (refused := await authorize(request)) is not None:
                return refused
            body = await request.json()
            if any(existing["title"] == body["title"] for existing in self.folders.values()):
                return JSONResponse({"message": "a folder with the same name already exists"}, status_code=409)
            self.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"], "id": len(self.folders) + 1}
            return JSONResponse(self.folders[body["uid"]])

        async def get_dashboard(request: Request) -> JSONResponse:
            if (refused := await authorize(request)) is not None:
                return refused
            uid = request.path_params["uid"]
            if uid not in self.dashboards:
                return JSONResponse({"message": "Dashboard not found"}, status_code=404)
            return JSONResponse(self.dashboards[uid])

        async def save_dashboard(request: Request) -> JSONResponse:
            if (refused := await authorize(request)) is not None:
                return refused
            body = await request.json()
            self.saves.append(body)
            dashboard, folder_uid = body["dashboard"], body["folderUid"]
            if folder_uid not in self.folders:
                return JSONResponse({"message": "folder not found"}, status_code=400)
            uid = dashboard["uid"]
            previous = self.dashboards.get(uid)
            if previous is not None and not body["overwrite"]:
                return JSONResponse({"message": "version-mismatch"}, status_code=412)
            version = 1 if previous is None else previous["dashboard"]["version"] + 1
            stored = {**dashboard, "id": 7, "version": version}
            url = f"/d/{uid}/slug"
            self.dashboards[uid] = {"dashboard": stored, "meta": {"folderUid": folder_uid, "url": url}}
            return JSONResponse({"status": "success", "uid": uid, "version": version, "url": url, "id": 7})

        return Starlette(
            routes=[
                Route("/api/folders/{uid}", folder, methods=["GET"]),
                Route("/api/folders", create_folder, methods=["POST"]),
                Route("/api/dashboards/uid/{uid}", get_dashboard, methods=["GET"]),
                Route("/api/dashboards/db", save_dashboard, methods=["POST"]),
            ]
        )


@pytest.fixture
def grafana() -> Iterator[tuple[FakeGrafana, str]]:
    fake = FakeGrafana()
    with serve_app(fake.app()) as url:
        yield fake, url


def run_push(url: str, key: str | None, *extra: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="otel-monitoring")
    dashboards_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dashboards", "push", *extra])
    args.environ = {"GRAFANA_URL": url, **({"GRAFANA_API_KEY": key} if key is not None else {})}
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = args.func(args)
    return status, out.getvalue(), err.getvalue()


def test_first_push_creates_the_folder_and_every_dashboard(grafana: tuple[FakeGrafana, str]) -> None:
    fake, url = grafana
    status, out, err = run_push(url, TOKEN, "--folder", "AIAgency")
    assert status == 0, err
    assert fake.folders["aiagency"]["title"] == "AIAgency"
    assert set(fake.dashboards) == set(DASHBOARD_UIDS)
    assert all(save["overwrite"] is True and save["folderUid"] == "aiagency" for save in fake.saves)
    assert all(save["dashboard"]["id"] is None for save in fake.saves)  # found by uid, never by another id
    stored = fake.dashboards["app-errors"]["dashboard"]
    assert dashboard_fingerprint(stored) == dashboard_fingerprint(build_dashboards()["app-errors"])
    assert out.count("created") == len(DASHBOARD_UIDS) + 1  # one line each and the summary
    assert "9 created, 0 updated, 0 unchanged" in out


def test_second_push_changes_nothing_and_reports_unchanged(grafana: tuple[FakeGrafana, str]) -> None:
    fake, url = grafana
    assert run_push(url, TOKEN)[0] == 0
    saves_after_first = len(fake.saves)
    status, out, _ = run_push(url, TOKEN)
    assert status == 0
    assert len(fake.saves) == saves_after_first  # no POST /api/dashboards/db, no new version
    assert fake.requests.count(("POST", "/api/folders")) == 1  # the folder was created once
    assert "0 created, 0 updated, 9 unchanged" in out
    assert "unchanged app-overview (version 1)" in out


def test_a_dashboard_changed_in_grafana_is_overwritten_with_a_new_version(grafana: tuple[FakeGrafana, str]) -> None:
    fake, url = grafana
    run_push(url, TOKEN)
    edited = fake.dashboards["business-costs"]["dashboard"]
    edited["panels"] = edited["panels"][:1]  # someone deleted panels in the UI
    status, out, _ = run_push(url, TOKEN)
    assert status == 0
    assert "updated   business-costs (version 2)" in out
    assert "1 updated, 8 unchanged" in out
    restored = fake.dashboards["business-costs"]["dashboard"]
    assert restored["panels"] == build_dashboards()["business-costs"]["panels"]


def test_a_dashboard_in_another_folder_is_moved(grafana: tuple[FakeGrafana, str]) -> None:
    fake, url = grafana
    run_push(url, TOKEN, "--folder", "Old")
    status, out, _ = run_push(url, TOKEN, "--folder", "New")
    assert status == 0
    assert "9 updated" in out
    assert {entry["meta"]["folderUid"] for entry in fake.dashboards.values()} == {"new"}


def test_extra_keys_grafana_adds_on_save_do_not_count_as_a_change(grafana: tuple[FakeGrafana, str]) -> None:
    fake, url = grafana
    run_push(url, TOKEN)
    for entry in fake.dashboards.values():
        entry["dashboard"]["weekStart"] = ""  # a key of Grafana's own, absent from what we send
    assert "9 unchanged" in run_push(url, TOKEN)[1]


def test_a_wrong_key_fails_with_one_line_naming_grafana_api_key(grafana: tuple[FakeGrafana, str]) -> None:
    fake, url = grafana
    status, _, err = run_push(url, "wrong-key")
    assert status == 1
    assert err.count("\n") == 1 and "401" in err and "GRAFANA_API_KEY" in err
    assert "wrong-key" not in err  # a secret never reaches the output
    assert fake.dashboards == {}


def test_a_missing_key_exits_2_before_any_request(grafana: tuple[FakeGrafana, str]) -> None:
    fake, url = grafana
    status, _, err = run_push(url, None)
    assert status == 2 and "GRAFANA_API_KEY" in err
    assert fake.requests == []


def test_an_unreachable_grafana_names_grafana_url() -> None:
    from tests.support import free_port

    url = f"http://127.0.0.1:{free_port()}"
    status, _, err = run_push(url, TOKEN)
    assert status == 1 and "GRAFANA_URL" in err and url in err


def test_an_unreachable_grafana_is_named_without_the_password_in_its_url() -> None:
    status, out, err = run_push("http://admin:s3cret-pw@127.0.0.1:1", TOKEN)
    assert status == 1 and "s3cret-pw" not in out + err
    assert f"http://admin:{MASK}@127.0.0.1:1" in err


def test_the_push_summary_shows_grafanas_url_without_its_password(grafana: tuple[FakeGrafana, str]) -> None:
    fake, url = grafana
    fake.basic_auth = ("admin", "s3cret-pw")
    status, out, err = run_push(url.replace("//", "//admin:s3cret-pw@", 1), TOKEN)
    assert status == 0 and "9 created" in out
    assert "s3cret-pw" not in out + err and url.replace("//", f"//admin:{MASK}@", 1) in out


def test_a_refused_login_names_grafana_without_the_password_in_its_url(grafana: tuple[FakeGrafana, str]) -> None:
    _, url = grafana
    status, out, err = run_push(url.replace("//", "//admin:s3cret-pw@", 1), TOKEN)
    assert status == 1 and "401" in err
    assert "s3cret-pw" not in out + err and url.replace("//", f"//admin:{MASK}@", 1) in err


def test_a_folder_name_taken_by_another_uid_reports_grafanas_message(grafana: tuple[FakeGrafana, str]) -> None:
    fake, url = grafana
    fake.folders["someone-else"] = {"uid": "someone-else", "title": "otel-monitoring", "id": 1}
    with GrafanaClient(url, TOKEN) as client, pytest.raises(GrafanaError, match=r"409.*same name"):
        push_dashboards(client, copy.deepcopy(build_dashboards()), "otel-monitoring", "otel-monitoring")
