"""Dashboards as files for Grafana's file provisioning: one ``<uid>.json`` per dashboard and a provider file.

>>> import tempfile
>>> from pathlib import Path
>>> with tempfile.TemporaryDirectory() as out:
...     sorted(path.name for path in write_dashboards(out))[:2]
['app-errors.json', 'app-overview.json']
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEFAULT_FOLDER",
    "DEFAULT_PROVISIONING_PATH",
    "PROVIDER_FILE",
    "dashboard_provider",
    "render_provider",
    "write_dashboards",
]

DEFAULT_FOLDER = "otel-monitoring"
DEFAULT_PROVISIONING_PATH = "/var/lib/grafana/dashboards/otel-monitoring"
"""Where the provider file tells Grafana the JSON files are (mount the rendered directory there)."""
PROVIDER_FILE = "dashboards.yaml"


def folder_uid(folder: str) -> str:
    """A folder's UID from its name: lower case, anything but letters, digits, ``-`` and ``_`` made ``-``.

    >>> folder_uid("AIAgency Monitoring")
    'aiagency-monitoring'
    """
    cleaned = "".join(char if char.isalnum() or char in "-_" else "-" for char in folder.strip().lower())
    return cleaned.strip("-")[:40] or DEFAULT_FOLDER


def dashboard_provider(folder: str = DEFAULT_FOLDER, path: str = DEFAULT_PROVISIONING_PATH) -> dict[str, Any]:
    """Grafana's dashboard provider (``provisioning/dashboards/*.yaml``) reading the JSON files in ``path`` into
    ``folder``; ``dashboards render`` and ``deploy render`` both write this one.

    >>> dashboard_provider("Ops")["providers"][0]["folderUid"]
    'ops'
    """
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "otel-monitoring",
                "orgId": 1,
                "folder": folder,
                # The folder push uses too, so a pushed and a provisioned copy land in the same place.
                "folderUid": folder_uid(folder),
                "type": "file",
                # Code is the source: a dashboard whose file is gone (dropped from the code, then re-rendered) is
                # deleted from Grafana too, rather than left behind as an orphan nobody maintains. The UI cannot
                # delete a provisioned dashboard either way.
                "disableDeletion": False,
                # Edits in the UI would be overwritten by the next provisioning pass.
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {"path": path, "foldersFromFilesStructure": False},
            }
        ],
    }


def render_provider(folder: str = DEFAULT_FOLDER, path: str = DEFAULT_PROVISIONING_PATH) -> str:
    """:func:`dashboard_provider` as YAML text."""
    return yaml.safe_dump(dashboard_provider(folder, path), sort_keys=False)


def dashboard_text(dashboard: Mapping[str, Any]) -> str:
    """A dashboard as the file ``render`` writes: indented JSON, a final newline, stable across runs."""
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def write_dashboards(
    out: str | Path,
    dashboards: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    folder: str = DEFAULT_FOLDER,
    provisioning_path: str = DEFAULT_PROVISIONING_PATH,
) -> list[Path]:
    """Write ``<uid>.json`` for each dashboard (default: all nine) and ``dashboards.yaml`` into ``out``; returns
    the paths written. Other files in ``out`` are left alone."""
    if dashboards is None:
        from otel_monitoring.dashboards import build_dashboards

        dashboards = build_dashboards()
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for uid, dashboard in dashboards.items():
        path = directory / f"{uid}.json"
        path.write_text(dashboard_text(dashboard), encoding="utf-8")
        written.append(path)
    provider = directory / PROVIDER_FILE
    provider.write_text(render_provider(folder, provisioning_path), encoding="utf-8")
    written.append(provider)
    return written
