"""``promtool check rules`` and ``promtool test rules``, with ``PrometheusRule`` files unwrapped first.

>>> check_rules([])  # doctest: +SKIP
PromtoolResult(ok=True, output='')
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import yaml

__all__ = ["PromtoolNotFoundError", "PromtoolResult", "check_rules", "find_promtool", "rule_files_in", "test_rules"]

PROMTOOL_INSTALL_HINT = (
    "promtool was not found on PATH; it ships with Prometheus (Debian/Ubuntu: apt-get install prometheus; "
    "or the prometheus-*.tar.gz release archive)"
)


class PromtoolNotFoundError(RuntimeError):
    """promtool is not installed; the message says how to get it."""

    def __init__(self) -> None:
        super().__init__(PROMTOOL_INSTALL_HINT)


@dataclass(frozen=True)
class PromtoolResult:
    ok: bool
    output: str


def find_promtool(promtool: str | None = None) -> str:
    """The promtool executable: ``promtool`` if given (a path or a name on PATH), else ``promtool`` on PATH."""
    found = shutil.which(promtool or "promtool")
    if found is None:
        raise PromtoolNotFoundError()
    return found


def rule_files_in(directory: str | PathLike[str]) -> list[Path]:
    """The YAML files of a directory, sorted (``*.yml`` and ``*.yaml``)."""
    root = Path(directory)
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix in (".yml", ".yaml"))


def _unwrap_prometheus_rules(paths: Sequence[Path], scratch: Path) -> list[Path]:
    """promtool reads Prometheus rule files only: a PrometheusRule's ``spec`` is written out as one."""
    result = []
    for index, path in enumerate(paths):
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            result.append(path)  # promtool reports it with its own words
            continue
        if isinstance(document, dict) and document.get("kind") == "PrometheusRule":
            unwrapped = scratch / f"{index}-{path.name}"
            unwrapped.write_text(yaml.safe_dump(document.get("spec") or {}, sort_keys=False), encoding="utf-8")
            result.append(unwrapped)
        else:
            result.append(path)
    return result


def _run(argv: Sequence[str], cwd: Path | None = None) -> PromtoolResult:
    completed = subprocess.run(list(argv), capture_output=True, text=True, check=False, cwd=cwd, timeout=300)
    return PromtoolResult(completed.returncode == 0, (completed.stdout + completed.stderr).strip())


def check_rules(paths: Sequence[str | PathLike[str]], *, promtool: str | None = None) -> PromtoolResult:
    """Run ``promtool check rules`` on the files (PrometheusRule files included). Raises
    :class:`PromtoolNotFoundError` when promtool is missing."""
    executable = find_promtool(promtool)
    files = [Path(p) for p in paths]
    if not files:
        return PromtoolResult(True, "")
    with tempfile.TemporaryDirectory(prefix="otel-monitoring-rules-") as scratch:
        unwrapped = _unwrap_prometheus_rules(files, Path(scratch))
        result = _run([executable, "check", "rules", *map(str, unwrapped)])
    # Name the user's files, not the scratch copies, in promtool's output.
    output = result.output
    for original, copy in zip(files, unwrapped, strict=True):
        output = output.replace(str(copy), str(original))
    return PromtoolResult(result.ok, output)


def test_rules(test_files: Sequence[str | PathLike[str]], *, promtool: str | None = None) -> PromtoolResult:
    """Run ``promtool test rules`` on unit-test files (their ``rule_files`` are relative to each test file)."""
    executable = find_promtool(promtool)
    paths = [Path(p).resolve() for p in test_files]
    cwd = paths[0].parent if paths else None
    return _run([executable, "test", "rules", *map(str, paths)], cwd=cwd)


test_rules.__test__ = False  # type: ignore[attr-defined]  # a library function, not a pytest test
