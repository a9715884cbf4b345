"""Rules from YAML in Prometheus's rule-file shape (the seed's ``- alert: HighLatency`` examples).

Two shapes are accepted: a rule file (``groups: [{name, interval, rules}]``) and a bare list of rules, which
becomes one group. Every error names the key, as ``alerts.yaml: rules[2].for: must be a Prometheus duration
such as 30s, 5m or 1h (got '5 minutes')``.

>>> groups = parse_rules('''
... - alert: HighLatency
...   expr: job:http_server_request_duration_seconds:p95 > 1
...   for: 5m
...   labels: {severity: warning}
...   annotations: {summary: "High latency"}
... ''', group="seed")
>>> groups[0].rules[0].for_
'5m'
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from otel_monitoring.rules.model import SEVERITIES, Alert, RecordingRule, Rule, RuleGroup

__all__ = ["RuleFileError", "load_rule_file", "parse_rules"]

_ALERT_KEYS = ("alert", "annotations", "expr", "for", "keep_firing_for", "labels")
_RECORD_KEYS = ("expr", "labels", "record")
_GROUP_KEYS = ("interval", "limit", "name", "query_offset", "rules")
# Where each Alert field came from in the YAML, to name the key in an error.
_ALERT_FIELD_KEYS = {"name": "alert", "query": "expr", "for_": "for", "severity": "labels.severity"}


class RuleFileError(ValueError):
    """A rule file that cannot be used; ``key`` is where (``groups[0].rules[2].for``), ``source`` the file."""

    def __init__(self, key: str, message: str, source: str = "") -> None:
        self.key, self.message, self.source = key, message, source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {message}")


def _describe(value: object) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else type(value).__name__


def _strings(value: object, key: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RuleFileError(key, f"must be a mapping of names to strings (got {_describe(value)})")
    result = {}
    for name, item in value.items():
        if not isinstance(item, str | int | float) or isinstance(item, bool):
            raise RuleFileError(f"{key}.{name}", f"must be a string (got {_describe(item)})")
        result[str(name)] = str(item)
    return result


def _first_error(error: ValidationError, fields: Mapping[str, str], key: str) -> RuleFileError:
    detail = error.errors()[0]
    field = str(detail["loc"][0]) if detail["loc"] else ""
    message = str(detail["msg"]).removeprefix("Value error, ")
    return RuleFileError(f"{key}.{fields.get(field, field)}" if field else key, message)


def _parse_alert(raw: Mapping[str, Any], key: str) -> Alert:
    labels = _strings(raw.get("labels"), f"{key}.labels")
    annotations = _strings(raw.get("annotations"), f"{key}.annotations")
    severity = labels.pop("severity", None)
    if severity is None:
        raise RuleFileError(f"{key}.labels.severity", f"required: one of {', '.join(SEVERITIES)}")
    if "keep_firing_for" in raw:
        raise RuleFileError(f"{key}.keep_firing_for", "not supported (Prometheus 2.42 and the seed's Alert lack it)")
    fields: dict[str, Any] = {
        "name": raw.get("alert"),
        "query": raw.get("expr"),
        "severity": severity,
        "labels": labels,
        "annotations": annotations,
        "runbook_url": annotations.pop("runbook_url", None),
    }
    if raw.get("for") is not None:
        fields["for_"] = raw["for"]
    try:
        return Alert.model_validate(fields)
    except ValidationError as error:
        raise _first_error(error, _ALERT_FIELD_KEYS, key) from None


def _parse_rule(raw: object, key: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise RuleFileError(key, f"must be a mapping with alert or record (got {_describe(raw)})")
    if ("alert" in raw) == ("record" in raw):
        raise RuleFileError(key, "needs exactly one of 'alert' (an alerting rule) or 'record' (a recording rule)")
    valid = _ALERT_KEYS if "alert" in raw else _RECORD_KEYS
    for name in raw:
        if name not in valid:
            raise RuleFileError(f"{key}.{name}", f"unknown key (valid: {', '.join(valid)})")
    if "expr" not in raw:
        raise RuleFileError(f"{key}.expr", "required: the PromQL expression")
    for name in ("alert", "record", "expr", "for"):
        if name in raw and not isinstance(raw[name], str):
            raise RuleFileError(f"{key}.{name}", f"must be a string (got {_describe(raw[name])})")
    if "alert" in raw:
        return _parse_alert(raw, key)
    try:
        return RecordingRule(
            record=raw["record"], expr=raw["expr"], labels=_strings(raw.get("labels"), f"{key}.labels")
        )
    except ValidationError as error:
        raise _first_error(error, {}, key) from None


def _parse_rule_list(raw: object, key: str) -> list[Rule]:
    if not isinstance(raw, list):
        raise RuleFileError(key, f"must be a list of rules (got {_describe(raw)})")
    return [_parse_rule(item, f"{key}[{index}]") for index, item in enumerate(raw)]


def _parse_group(raw: object, key: str) -> RuleGroup:
    if not isinstance(raw, Mapping):
        raise RuleFileError(key, f"must be a mapping with name and rules (got {_describe(raw)})")
    for name in raw:
        if name not in _GROUP_KEYS:
            raise RuleFileError(f"{key}.{name}", f"unknown key (valid: {', '.join(_GROUP_KEYS)})")
    for name in ("limit", "query_offset"):
        if name in raw:
            raise RuleFileError(f"{key}.{name}", "not supported by the rule groups rendered here")
    if not isinstance(raw.get("name"), str) or not raw["name"]:
        raise RuleFileError(f"{key}.name", "required: a non-empty string")
    rules = _parse_rule_list(raw.get("rules"), f"{key}.rules")
    try:
        return RuleGroup(name=raw["name"], interval=raw.get("interval"), rules=rules)
    except ValidationError as error:
        raise _first_error(error, {}, key) from None


def parse_rules(text: str, *, group: str = "rules", source: str = "") -> list[RuleGroup]:
    """Rule groups from YAML text: a rule file (``groups:``) or a bare list of rules, which becomes one group
    named ``group``. Raises :class:`RuleFileError` naming the key."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "document"
        raise RuleFileError(where, f"not valid YAML ({getattr(error, 'problem', None) or error})", source) from None
    try:
        if isinstance(document, list):
            return [RuleGroup(name=group, rules=_parse_rule_list(document, "rules"))]
        if isinstance(document, Mapping):
            for name in document:
                if name != "groups":
                    raise RuleFileError(str(name), "unknown key (valid: groups; or give a bare list of rules)")
            groups = document.get("groups")
            if not isinstance(groups, list):
                raise RuleFileError("groups", f"must be a list of groups (got {_describe(groups)})")
            parsed = [_parse_group(item, f"groups[{index}]") for index, item in enumerate(groups)]
            names = [g.name for g in parsed]
            for index, name in enumerate(names):
                if name in names[:index]:
                    raise RuleFileError(f"groups[{index}].name", f"group {name!r} is defined twice")
            return parsed
        raise RuleFileError(
            "document", f"must be a mapping with groups, or a list of rules (got {_describe(document)})"
        )
    except RuleFileError as error:
        raise RuleFileError(error.key, error.message, source) from None


def load_rule_file(path: str | PathLike[str]) -> list[RuleGroup]:
    """Rule groups from a YAML file; a bare list of rules becomes one group named after the file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise RuleFileError("file", f"cannot be read ({error.strerror or error})", str(file)) from None
    return parse_rules(text, group=file.stem, source=str(file))
