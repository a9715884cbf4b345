"""How the sidecar's modules depend on each other: private names stay private, shared helpers live in leaf modules."""

from __future__ import annotations

import ast
from pathlib import Path

import otel_monitoring
from otel_monitoring.sidecar import remote_write, service
from otel_monitoring.sidecar._points import count_points

PACKAGE = Path(otel_monitoring.__file__).parent
SIDECAR_MODULES = sorted((PACKAGE / "sidecar").glob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_imports_a_private_name_from_a_public_module() -> None:
    found = []
    for path in [*SIDECAR_MODULES, PACKAGE / "pushgateway.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and not _private(node.module.rsplit(".", 1)[-1]):
                found += [
                    f"{path.name}: {alias.name} from {node.module}" for alias in node.names if _private(alias.name)
                ]
    assert found == []


def test_no_sidecar_code_calls_a_private_member_of_another_object() -> None:
    found = []
    for path in SIDECAR_MODULES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            # self._converter._convert: a private member of something self holds
            if (
                isinstance(node, ast.Attribute)
                and _private(node.attr)
                and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "self"
            ):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def test_no_sidecar_module_imports_the_service_lazily() -> None:
    # A function-level import of the service hides a cycle; shared helpers belong in a leaf module.
    found = []
    for path in SIDECAR_MODULES:
        for function in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                found += [
                    f"{path.name}:{node.lineno}"
                    for node in ast.walk(function)
                    if isinstance(node, ast.ImportFrom) and node.module == "otel_monitoring.sidecar.service"
                ]
    assert found == []


def test_count_points_is_one_function_re_exported_by_the_service() -> None:
    assert service.count_points is count_points
    assert "count_points" in service.__all__


def test_the_remote_write_converter_has_a_public_conversion() -> None:
    assert callable(remote_write.RemoteWriteConverter.convert)
    assert "Conversion" in remote_write.__all__
