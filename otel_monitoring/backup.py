"""``otel-monitoring backup`` and ``restore``: the seed's maintenance backup (Prometheus configuration, alert rules,
Grafana dashboards) as one archive.

The archive is a ``.tar.gz`` holding ``manifest.json`` and these files:

=================================  ======================================================================
``prometheus/prometheus.yml``      ``--prometheus-config FILE``, else live from ``/api/v1/status/config``
``prometheus/rules/*``             ``--rules DIR``, else the live config's ``rule_files`` when they are absolute
                                   paths readable here, else rendered from code (the rule pack and
                                   ``alerting.app``/``rule_files``)
``alertmanager/alertmanager.yml``  ``--alertmanager-config FILE``, else live from ``/api/v2/status``, else
                                   rendered from the settings (secrets as file references)
``grafana/dashboards/<uid>.json``  ``--dashboards DIR``, else live from Grafana (``/api/search`` and
                                   ``/api/dashboards/uid/<uid>``), else rendered from code
                                   (``otel_monitoring.dashboards.build_dashboards``)
``settings.yaml``                  the effective settings, secrets masked
=================================  ======================================================================

``manifest.json`` records the format version, the creation time, the versions of otel-monitoring, Prometheus,
Alertmanager and Grafana, and for every file its path, size, sha256 and source; what could not be archived is
listed under ``skipped`` with the reason.

**Secrets never enter the archive, nor the manifest.** Every secret the settings hold (webhook URLs, API keys,
passwords) of at least 8 characters is replaced by ``********`` wherever it appears, so is the password of any
URL (``http://user:********@host``), YAML keys that hold credentials (``password``, ``api_url``,
``routing_key``...) are masked whatever their length, and secret files are left out. Prometheus and Alertmanager mask
their own secrets as ``<secret>`` in their APIs. A restored config therefore needs its secrets put back.

``restore`` checks every file against the manifest before writing any, refuses to overwrite existing files
unless told to, and never writes outside the target directory.

>>> print(mask_secrets("route:\\n  receiver: slack\\nglobal:\\n  slack_api_url: https://hooks.example/x\\n"), end="")
route:
  receiver: slack
global:
  slack_api_url: '********'
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from glob import glob
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import httpx
import yaml

from otel_monitoring.settings import MASK, Settings, hide_url_password, render_settings, secret_values

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "BackupError",
    "BackupSources",
    "Manifest",
    "ManifestFile",
    "RestoreResult",
    "create_backup",
    "mask_secrets",
    "push_dashboards",
    "restore_backup",
]

FORMAT = "otel-monitoring-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

# Keys whose string values are credentials in Prometheus, Alertmanager and Grafana configs. ``url`` is not one of
# them (most URLs are not secret); a secret URL is caught by the settings' own secret values instead.
_SECRET_KEYS = frozenset(
    {
        "password",
        "auth_password",
        "smtp_auth_password",
        "smtp_auth_secret",
        "secret",
        "client_secret",
        "token",
        "auth_token",
        "bearer_token",
        "credentials",
        "api_key",
        "api_url",
        "slack_api_url",
        "routing_key",
        "service_key",
        "webhook_url",
        "secureJsonData",
    }
)


class BackupError(Exception):
    """A backup or restore that cannot go on; the message is one line naming the file or URL."""


@dataclass(frozen=True, slots=True)
class BackupSources:
    """Files to archive instead of asking the servers (any may be ``None``)."""

    prometheus_config: str | os.PathLike[str] | None = None
    rules_dir: str | os.PathLike[str] | None = None
    alertmanager_config: str | os.PathLike[str] | None = None
    dashboards_dir: str | os.PathLike[str] | None = None


@dataclass(frozen=True, slots=True)
class ManifestFile:
    """One archived file: its path in the archive, size in bytes, sha256 (hex) and where it came from."""

    path: str
    size: int
    sha256: str
    source: str


@dataclass(slots=True)
class Manifest:
    """What an archive holds; ``manifest.json`` is its JSON form."""

    created: str
    versions: dict[str, str]
    files: list[ManifestFile] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        document = json.loads(text)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise BackupError(f"{MANIFEST}: not an otel-monitoring backup manifest")
        if document.get("format_version") != FORMAT_VERSION:
            raise BackupError(
                f"{MANIFEST}: format_version {document.get('format_version')!r} is not supported "
                f"(this version reads {FORMAT_VERSION})"
            )
        try:
            files = [ManifestFile(**item) for item in document["files"]]
            return cls(
                created=str(document["created"]),
                versions=dict(document.get("versions", {})),
                files=files,
                skipped=list(document.get("skipped", [])),
            )
        except (KeyError, TypeError) as error:
            raise BackupError(f"{MANIFEST}: malformed ({error})") from None

    def summary_lines(self) -> list[str]:
        """One line per archived file and per skipped item, for the CLI."""
        lines = [f"  {item.path}  ({item.source})" for item in self.files]
        lines += [f"  skipped {item['item']}: {item['reason']}" for item in self.skipped]
        return lines


# --- Masking ----------------------------------------------------------------------------------------------------


# A shorter secret is not replaced in free text: a password like ``admin`` would blank ``username: admin`` and
# every other ``admin``. Short secrets are still masked under credential keys and as a URL's password.
_MIN_FREE_TEXT_SECRET = 8


def _free_text_secrets(secrets: Iterable[str]) -> list[str]:
    # Longest first, so a secret containing another is replaced whole.
    return sorted((secret for secret in secrets if len(secret) >= _MIN_FREE_TEXT_SECRET), key=len, reverse=True)


def _scrub(text: str, secrets: Iterable[str]) -> str:
    text = hide_url_password(text)
    for secret in _free_text_secrets(secrets):
        text = text.replace(secret, MASK)
    return text


def _mask_tree(node: Any, secrets: Sequence[str]) -> tuple[Any, bool]:
    """``node`` with credential keys masked and known secrets scrubbed out of every string; and whether it changed."""
    if isinstance(node, dict):
        changed = False
        masked: dict[Any, Any] = {}
        for key, value in node.items():
            if key in _SECRET_KEYS and isinstance(value, str | dict) and value not in ("", MASK, "<secret>"):
                masked[key] = MASK if isinstance(value, str) else dict.fromkeys(value, MASK)
                changed = True
            else:
                masked[key], sub_changed = _mask_tree(value, secrets)
                changed = changed or sub_changed
        return masked, changed
    if isinstance(node, list):
        results = [_mask_tree(item, secrets) for item in node]
        return [item for item, _ in results], any(changed for _, changed in results)
    if isinstance(node, str):
        scrubbed = _scrub(node, secrets)
        return scrubbed, scrubbed != node
    return node, False


def mask_secrets(
    text: str, secrets: Sequence[str] = (), *, text_format: Literal["yaml", "json", "text"] = "yaml"
) -> str:
    """``text`` with the values of credential keys (``password``, ``api_url``, ``routing_key``...), URL passwords
    and every string of at least 8 characters in ``secrets`` replaced by ``********``.

    YAML and JSON are masked value by value and dumped again only when something changed, so text without
    secrets comes back byte for byte (a restored file equals the original) and masked text stays valid YAML or
    JSON. A secret left elsewhere (a YAML comment) drops the comments; plain text is scrubbed as text.

    >>> print(mask_secrets("global:\\n  slack_api_url: https://hooks.slack.com/services/T/B/x\\n"), end="")
    global:
      slack_api_url: '********'
    """
    if text_format == "text":
        return _scrub(text, secrets)
    try:
        document = yaml.safe_load(text) if text_format == "yaml" else json.loads(text)
    except (yaml.YAMLError, ValueError):
        return _scrub(text, secrets)
    masked, changed = _mask_tree(document, secrets)
    if not changed and not any(secret in text for secret in _free_text_secrets(secrets)):
        return text
    if text_format == "json":
        return json.dumps(masked, indent=2, sort_keys=True) + "\n"
    dumped = yaml.safe_dump(masked, sort_keys=False, allow_unicode=True, width=120)
    return _scrub(dumped, secrets)  # a secret used as a mapping key: nothing else would catch it


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- Collecting -------------------------------------------------------------------------------------------------


class _Collector:
    """Gathers archive entries, scrubbing every text of the settings' secrets as it is added."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self.secrets = list(secrets)
        self.entries: dict[str, tuple[bytes, str]] = {}
        self.skipped: list[dict[str, str]] = []
        self.versions: dict[str, str] = {}

    def add_text(self, path: str, text: str, source: str) -> None:
        suffix = PurePosixPath(path).suffix
        text_format: Literal["yaml", "json", "text"] = (
            "yaml" if suffix in (".yml", ".yaml") else "json" if suffix == ".json" else "text"
        )
        masked = mask_secrets(text, self.secrets, text_format=text_format)
        self.entries[path] = (masked.encode("utf-8"), _scrub(source, self.secrets))

    def skip(self, item: str, reason: str) -> None:
        self.skipped.append({"item": item, "reason": _scrub(reason, self.secrets)})


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise BackupError(f"{what} {path}: cannot be read ({reason})") from None


class _API:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def json(self, url: str, *, auth: httpx.Auth | None = None, headers: Mapping[str, str] | None = None) -> Any:
        """The decoded JSON at ``url``; raises :class:`httpx.HTTPError` or ``ValueError`` when it is not there."""
        response = self.client.get(url, auth=auth, headers=dict(headers or {}))
        response.raise_for_status()
        return response.json()


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def _why(error: Exception) -> str:
    if isinstance(error, httpx.ConnectError):
        return "connection refused" if "refused" in str(error).lower() else f"cannot connect ({error})"
    if isinstance(error, httpx.TimeoutException):
        return "timeout"
    if isinstance(error, httpx.HTTPStatusError):
        return f"HTTP {error.response.status_code}"
    return str(error) or type(error).__name__


@dataclass(frozen=True, slots=True)
class _RuleFiles:
    """The ``rule_files`` of the archived prometheus.yml: patterns to read, and relative ones backup cannot place."""

    globs: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)


def _prometheus(collector: _Collector, api: _API, settings: Settings, sources: BackupSources) -> _RuleFiles:
    """Archive prometheus.yml; return the rule_files it names."""
    prometheus = settings.prometheus
    auth = None
    if prometheus.basic_auth_username is not None and prometheus.basic_auth_password is not None:
        auth = httpx.BasicAuth(prometheus.basic_auth_username, prometheus.basic_auth_password.get_secret_value())
    try:
        build = api.json(_join(prometheus.url, "api/v1/status/buildinfo"), auth=auth)
        collector.versions["prometheus"] = str(build["data"]["version"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        pass
    if sources.prometheus_config is not None:
        path = Path(sources.prometheus_config)
        text = _read_text(path, "--prometheus-config")
        collector.add_text("prometheus/prometheus.yml", text, f"file {path}")
        return _rule_files(text, path.parent)
    url = _join(prometheus.url, "api/v1/status/config")
    try:
        text = str(api.json(url, auth=auth)["data"]["yaml"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
        collector.skip("prometheus/prometheus.yml", f"{url}: {_why(error)} (pass --prometheus-config FILE)")
        return _RuleFiles()
    collector.add_text("prometheus/prometheus.yml", text, f"prometheus {url}")
    # Prometheus resolves relative rule_files against its config file's directory, which its API does not give.
    return _rule_files(text, None)


def _rule_files(config_text: str, base: Path | None) -> _RuleFiles:
    """The config's rule_files; relative ones resolved against ``base``, or unresolved when it is unknown."""
    try:
        document = yaml.safe_load(config_text) or {}
    except yaml.YAMLError:
        return _RuleFiles()
    patterns = document.get("rule_files") or [] if isinstance(document, dict) else []
    found = _RuleFiles()
    for pattern in (item for item in patterns if isinstance(item, str)):
        if os.path.isabs(pattern):
            found.globs.append(pattern)
        elif base is not None:
            found.globs.append(str(base / pattern))
        else:
            found.unresolved.append(pattern)
    return found


def _rules(collector: _Collector, settings: Settings, sources: BackupSources, rule_files: _RuleFiles) -> None:
    if sources.rules_dir is not None:
        directory = Path(sources.rules_dir)
        if not directory.is_dir():
            raise BackupError(f"--rules {directory}: not a directory")
        files = sorted(p for p in directory.iterdir() if p.suffix in (".yml", ".yaml") and p.is_file())
        if not files:
            raise BackupError(f"--rules {directory}: no .yml or .yaml files")
        for path in files:
            collector.add_text(f"prometheus/rules/{path.name}", _read_text(path, "--rules"), f"file {path}")
        return
    live = sorted({match for pattern in rule_files.globs for match in glob(pattern) if Path(match).is_file()})
    if live and not rule_files.unresolved:
        for path in map(Path, live):
            collector.add_text(f"prometheus/rules/{path.name}", _read_text(path, "rule file"), f"file {path}")
        return
    try:
        from otel_monitoring.rules.render import file_name, render_rule_groups
        from otel_monitoring.rules_cli import collect_groups

        groups = collect_groups(settings, search_path=os.getcwd())
    except Exception as error:  # importing the application's rules may fail in any way
        collector.skip("prometheus/rules", f"cannot render the rules from code: {error}")
        return
    source = "rendered from code"
    if rule_files.unresolved:
        source += (
            f" (the live config's rule_files {', '.join(rule_files.unresolved)} are relative to Prometheus's config "
            "directory, which its API does not give: pass --rules DIR or --prometheus-config FILE)"
        )
    for group in groups:
        collector.add_text(f"prometheus/rules/{file_name(group)}", render_rule_groups([group]), source)


def _alertmanager(collector: _Collector, api: _API, settings: Settings, sources: BackupSources) -> None:
    target = "alertmanager/alertmanager.yml"
    if sources.alertmanager_config is not None:
        path = Path(sources.alertmanager_config)
        collector.add_text(target, _read_text(path, "--alertmanager-config"), f"file {path}")
        return
    url = _join(settings.alerting.alertmanager_url, "api/v2/status")
    try:
        status = api.json(url)
        text = str(status["config"]["original"])
        collector.versions["alertmanager"] = str(status.get("versionInfo", {}).get("version", "?"))
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
        reason = _why(error)
    else:
        collector.add_text(target, text, f"alertmanager {url}")
        return
    from otel_monitoring.alertmanager_config import TEMPLATE_FILE_NAME, render_alertmanager_config

    try:
        # Secrets as file references: the secret files themselves are left out of the archive.
        rendered = render_alertmanager_config(
            settings.alerting,
            dashboard_url=settings.alerting.dashboard_url or settings.grafana.url,
            secrets_dir="/etc/alertmanager/secrets",
        )
    except ValueError as error:
        collector.skip(target, f"{url}: {reason}; rendering from settings failed: {error}")
        return
    collector.add_text(target, rendered.config, f"rendered from settings ({url}: {reason})")
    collector.add_text(f"alertmanager/{TEMPLATE_FILE_NAME}", rendered.template, "rendered from settings")


def _dashboards(collector: _Collector, api: _API, settings: Settings, sources: BackupSources) -> None:
    if sources.dashboards_dir is not None:
        directory = Path(sources.dashboards_dir)
        if not directory.is_dir():
            raise BackupError(f"--dashboards {directory}: not a directory")
        files = sorted(p for p in directory.iterdir() if p.suffix == ".json" and p.is_file())
        if not files:
            raise BackupError(f"--dashboards {directory}: no .json files")
        for path in files:
            collector.add_text(f"grafana/dashboards/{path.name}", _read_text(path, "--dashboards"), f"file {path}")
        return
    grafana = settings.grafana
    headers = {} if grafana.api_key is None else {"Authorization": f"Bearer {grafana.api_key.get_secret_value()}"}
    search = _join(grafana.url, "api/search")
    try:
        health = api.json(_join(grafana.url, "api/health"))
        collector.versions["grafana"] = str(health.get("version", "?"))
        found = api.json(search + "?type=dash-db&limit=5000", headers=headers)
        dashboards = {}
        for item in found:
            uid = str(item["uid"])
            dashboards[uid] = api.json(_join(grafana.url, f"api/dashboards/uid/{uid}"), headers=headers)
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
        reason = f"{search}: {_why(error)}"
    else:
        for uid, document in sorted(dashboards.items()):
            text = json.dumps(document.get("dashboard", document), indent=2, sort_keys=True) + "\n"
            folder = (document.get("meta") or {}).get("folderTitle", "")
            source = f"grafana {grafana.url}" + (f" (folder {folder})" if folder else "")
            collector.add_text(f"grafana/dashboards/{_safe_name(uid)}.json", text, source)
        if not dashboards:
            collector.skip("grafana/dashboards", f"{search}: no dashboards")
        return
    from otel_monitoring.dashboards import build_dashboards

    for uid, document in sorted(build_dashboards().items()):
        text = json.dumps(document, indent=2, sort_keys=True) + "\n"
        collector.add_text(f"grafana/dashboards/{_safe_name(uid)}.json", text, f"rendered from code ({reason})")


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _safe_name(uid: str) -> str:
    return _UNSAFE.sub("_", uid) or "_"


def _package_version() -> str:
    try:
        return version("otel-monitoring")
    except PackageNotFoundError:
        return "unknown"


def create_backup(
    settings: Settings,
    out: str | os.PathLike[str],
    *,
    sources: BackupSources | None = None,
    overwrite: bool = False,
    timeout: float = 5.0,
    transport: httpx.BaseTransport | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Manifest:
    """Write the archive to ``out`` and return its manifest; raises :class:`BackupError` on bad input.

    Servers that do not answer are not errors: their part is rendered from code when it can be, and listed under
    ``skipped`` otherwise. The archive is written to a temporary file and renamed, so ``out`` is never partial.
    """
    sources = sources or BackupSources()
    target = Path(out)
    if target.exists() and not overwrite:
        raise BackupError(f"--out {target}: exists (pass --force to overwrite)")
    if not target.parent.is_dir():
        raise BackupError(f"--out {target}: directory {target.parent} does not exist")
    collector = _Collector(secret_values(settings))
    collector.versions["otel-monitoring"] = _package_version()
    with httpx.Client(timeout=timeout, transport=transport, follow_redirects=True) as client:
        api = _API(client)
        rule_files = _prometheus(collector, api, settings, sources)
        _rules(collector, settings, sources, rule_files)
        _alertmanager(collector, api, settings, sources)
        _dashboards(collector, api, settings, sources)
    collector.add_text("settings.yaml", render_settings(settings, sources=True), "settings (secrets masked)")
    manifest = Manifest(created=now().isoformat(timespec="seconds"), versions=collector.versions)
    manifest.skipped = collector.skipped
    for path, (data, source) in collector.entries.items():
        manifest.files.append(ManifestFile(path, len(data), _sha256(data), source))
    _write_archive(target, manifest, collector.entries, now())
    return manifest


def _write_archive(target: Path, manifest: Manifest, entries: Mapping[str, tuple[bytes, str]], when: datetime) -> None:
    mtime = int(when.timestamp())

    def add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), mtime, 0o600
        archive.addfile(info, io.BytesIO(data))

    fd, scratch = tempfile.mkstemp(prefix=".otel-monitoring-backup-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as stream, tarfile.open(fileobj=stream, mode="w:gz") as archive:
            add(archive, MANIFEST, manifest.to_json().encode("utf-8"))
            for name, (data, _) in entries.items():
                add(archive, name, data)
        os.chmod(scratch, 0o600)  # configs and dashboards are not public even with secrets masked
        os.replace(scratch, target)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


# --- Restoring --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """The archive's manifest, the files written, and the dashboards it holds (for pushing to Grafana)."""

    manifest: Manifest
    written: list[Path]
    dashboards: dict[str, dict[str, Any]]


def _member_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BackupError(f"archive member {name!r}: path outside the restore directory")
    return path


def _read_archive(archive_path: Path) -> tuple[Manifest, dict[str, bytes]]:
    if not archive_path.is_file():
        raise BackupError(f"--from {archive_path}: no such file")
    contents: dict[str, bytes] = {}
    try:
        with tarfile.open(archive_path, mode="r:gz") as archive:
            for member in archive:
                _member_path(member.name)
                stream = archive.extractfile(member) if member.isfile() else None
                if stream is None:
                    raise BackupError(f"archive member {member.name!r}: not a regular file")
                contents[member.name] = stream.read()
    except (OSError, tarfile.TarError, EOFError) as error:
        raise BackupError(f"--from {archive_path}: not a readable tar.gz ({error})") from None
    if MANIFEST not in contents:
        raise BackupError(f"--from {archive_path}: no {MANIFEST} (not an otel-monitoring backup)")
    try:
        manifest = Manifest.from_json(contents.pop(MANIFEST).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        if isinstance(error, BackupError):
            raise
        raise BackupError(f"{MANIFEST}: not valid JSON ({error})") from None
    return manifest, contents


def _verify(manifest: Manifest, contents: Mapping[str, bytes]) -> None:
    listed = {item.path for item in manifest.files}
    for extra in sorted(set(contents) - listed):
        raise BackupError(f"archive member {extra!r}: not listed in {MANIFEST}")
    for item in manifest.files:
        _member_path(item.path)
        data = contents.get(item.path)
        if data is None:
            raise BackupError(f"{item.path}: listed in {MANIFEST} but missing from the archive")
        digest = _sha256(data)
        if digest != item.sha256 or len(data) != item.size:
            raise BackupError(
                f"{item.path}: checksum mismatch (manifest {item.sha256[:12]}..., archive {digest[:12]}...)"
            )


def restore_backup(
    archive: str | os.PathLike[str],
    to: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    verify_only: bool = False,
) -> RestoreResult:
    """Verify ``archive`` against its manifest, then write its files under ``to`` (created if missing).

    Nothing is written unless every checksum matches and, without ``overwrite``, no file exists yet. The
    manifest is written too, as ``manifest.json``, so a restored directory says where it came from.
    """
    manifest, contents = _read_archive(Path(archive))
    _verify(manifest, contents)
    dashboards: dict[str, dict[str, Any]] = {}
    for item in manifest.files:
        if item.path.startswith("grafana/dashboards/") and item.path.endswith(".json"):
            try:
                document = json.loads(contents[item.path])
            except ValueError:
                continue
            if isinstance(document, dict):
                dashboards[str(document.get("uid") or PurePosixPath(item.path).stem)] = document
    if verify_only:
        return RestoreResult(manifest, [], dashboards)
    root = Path(to)
    if root.exists() and not root.is_dir():
        raise BackupError(f"--to {root}: not a directory")
    planned = [(root / item.path, contents[item.path]) for item in manifest.files]
    planned.append((root / MANIFEST, manifest.to_json().encode("utf-8")))
    existing = [str(path) for path, _ in planned if path.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise BackupError(f"{existing[0]}{more}: exists (pass --force to overwrite)")
    written = []
    for path, data in planned:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        written.append(path)
    return RestoreResult(manifest, written, dashboards)


def push_dashboards(
    settings: Settings,
    dashboards: Mapping[str, Mapping[str, Any]],
    *,
    folder: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """Create or update ``dashboards`` in Grafana (``grafana.url``, ``grafana.api_key``) into ``folder`` with the
    code of ``otel-monitoring dashboards push``; returns how many were created or updated."""
    from otel_monitoring.dashboards.grafana import GrafanaClient, GrafanaError
    from otel_monitoring.dashboards.grafana import push_dashboards as push
    from otel_monitoring.dashboards.provisioning import DEFAULT_FOLDER, folder_uid

    if settings.grafana.api_key is None:
        raise BackupError("GRAFANA_API_KEY (grafana.api_key) is not set: a Grafana service-account token is needed")
    title = folder or DEFAULT_FOLDER
    api_key = settings.grafana.api_key.get_secret_value()
    with GrafanaClient(settings.grafana.url, api_key, transport=transport) as client:
        try:
            results = push(client, dashboards, folder_uid(title), title, message="otel-monitoring restore")
        except GrafanaError as error:
            raise BackupError(_scrub(str(error), secret_values(settings))) from None
    return sum(1 for result in results if result.status != "unchanged")
