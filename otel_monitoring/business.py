"""Business metrics: LLM generations (tokens, duration, cost), feature usage per customer, user satisfaction.

>>> from otel_monitoring import business
>>> business.record_generation(
...     client_id="acme-42", model="gpt-4o", provider="openai", input_tokens=1200, output_tokens=350,
...     content_type="article", duration=2.4,
... )
>>> business.record_usage(client_id="acme-42", feature="image_upscale", units=3)
>>> business.record_satisfaction(4, client_id="acme-42", channel="web")

These functions record only the inputs of the business processor (``processors/business.py``), with the
names it reads from its module constants, so both sides share one spelling. The processor then derives,
at export time, the cost per customer (tokens x its price table, unless ``cost=`` was given), the top-N
customers, generations without the customer and the satisfaction mean. Customer ids are recorded as
given and replaced by keyed pseudonyms by the sanitize processor before any exporter sees them.

Every call goes through the fast recording facade (a few µs, see ``docs/business-api.md``), with its
metric families declared once per registry on first use. Telemetry never breaks the host application: a
call with bad input (``input_tokens=None`` from a streamed response without usage) records nothing, leaves
every metric as it was, and logs one warning per function and argument naming the value and what is valid.
"""

from __future__ import annotations

import logging
import math
import numbers
import weakref
from typing import Final

from otel_monitoring._instruments import CounterFamily, HistogramFamily, MetricsRegistry
from otel_monitoring.metrics import default_registry
from processors.business import (
    CONTENT_TYPE_ATTRIBUTE,
    COST_METRIC,
    CUSTOMER_ATTRIBUTE,
    GENERATIONS_METRIC,
    PROVIDER_ATTRIBUTE,
    REQUEST_MODEL_ATTRIBUTE,
    RESPONSE_MODEL_ATTRIBUTE,
    SATISFACTION_BUCKETS,
    SATISFACTION_METRIC,
    STATUS_ATTRIBUTE,
    TOKEN_CACHE_ATTRIBUTE,
    TOKEN_TYPE_ATTRIBUTE,
    TOKEN_USAGE_METRIC,
)

__all__ = [
    "CHANNEL_ATTRIBUTE",
    "CSAT_SCALE",
    "DURATION_METRIC",
    "ERROR_TYPE_ATTRIBUTE",
    "FEATURE_ATTRIBUTE",
    "NPS_BUCKETS",
    "NPS_METRIC",
    "NPS_SCALE",
    "OPERATION_ATTRIBUTE",
    "OPERATION_DURATION_BUCKETS",
    "STATUS_OK",
    "TOKEN_USAGE_BUCKETS",
    "USAGE_METRIC",
    "record_generation",
    "record_satisfaction",
    "record_usage",
]

_logger = logging.getLogger(__name__)

# --- Names ---------------------------------------------------------------------------------------------------
# GenAI semantic conventions, client metrics:
# https://github.com/open-telemetry/semantic-conventions/blob/main/docs/gen-ai/gen-ai-metrics.md
DURATION_METRIC: Final = "gen_ai.client.operation.duration"
"""GenAI semconv histogram of operation duration in seconds."""
OPERATION_ATTRIBUTE: Final = "gen_ai.operation.name"
ERROR_TYPE_ATTRIBUTE: Final = "error.type"
TOKEN_USAGE_BUCKETS: Final = (
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0,
    1048576.0, 4194304.0, 16777216.0, 67108864.0,
)  # fmt: skip
"""The semantic conventions' advice for ``gen_ai.client.token.usage`` (powers of 4)."""
OPERATION_DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
"""The semantic conventions' advice for ``gen_ai.client.operation.duration``, in seconds."""

USAGE_METRIC: Final = "feature.usage"
"""Ours: a counter of units of a feature used, per customer (unit ``{unit}``)."""
FEATURE_ATTRIBUTE: Final = "feature.name"
CHANNEL_ATTRIBUTE: Final = "channel"

NPS_METRIC: Final = "user.nps"
"""Ours: a histogram of Net Promoter Score answers, 0 to 10; kept apart from ``user.satisfaction`` so that
the business processor's satisfaction mean is never a mix of two scales."""
NPS_BUCKETS: Final = tuple(float(score) for score in range(11))
"""One bucket per answer, so detractors (0-6) are ``le="6"`` and passives (7-8) ``le="8"`` minus that."""

CSAT_SCALE: Final = "csat"
"""A satisfaction score from 1 to 5, recorded in ``user.satisfaction`` (the default scale)."""
NPS_SCALE: Final = "nps"
"""A Net Promoter Score answer, a whole number from 0 to 10, recorded in ``user.nps``."""
STATUS_OK: Final = "ok"
"""The ``status`` of a successful generation; any other status is also the duration's ``error.type``."""

_TOKEN_USAGE_KEYS = (
    OPERATION_ATTRIBUTE,
    PROVIDER_ATTRIBUTE,
    REQUEST_MODEL_ATTRIBUTE,
    RESPONSE_MODEL_ATTRIBUTE,
    TOKEN_TYPE_ATTRIBUTE,
    TOKEN_CACHE_ATTRIBUTE,
    CUSTOMER_ATTRIBUTE,
)
# Latency is a property of the provider and model, not of the customer: no client_id here, which keeps a
# 15-bucket histogram from multiplying by the number of customers.
_DURATION_KEYS = (
    OPERATION_ATTRIBUTE,
    PROVIDER_ATTRIBUTE,
    REQUEST_MODEL_ATTRIBUTE,
    RESPONSE_MODEL_ATTRIBUTE,
    ERROR_TYPE_ATTRIBUTE,
)
_GENERATIONS_KEYS = (CONTENT_TYPE_ATTRIBUTE, STATUS_ATTRIBUTE, CUSTOMER_ATTRIBUTE)
# The same model attributes as the token usage, so the processor sees one account (model, provider,
# customer) on both and the explicit cost replaces that account's table price.
_COST_KEYS = (PROVIDER_ATTRIBUTE, REQUEST_MODEL_ATTRIBUTE, RESPONSE_MODEL_ATTRIBUTE, CUSTOMER_ATTRIBUTE)
_USAGE_KEYS = (FEATURE_ATTRIBUTE, CUSTOMER_ATTRIBUTE)
_SATISFACTION_KEYS = (CHANNEL_ATTRIBUTE, CUSTOMER_ATTRIBUTE)

_INPUT, _OUTPUT = "input", "output"
_CACHE_READ, _CACHE_CREATION = "read", "creation"  # values of gen_ai.token.cache the processor prices
_ABSENT = ""  # the facade leaves an attribute whose value is "" out of the exported point
_INF = math.inf


# --- Families, declared once per registry ----------------------------------------------------------------------


class _Families:
    """Every business family of one registry; declaring them all at once costs nothing visible, since a
    family with no series exports nothing."""

    __slots__ = ("cost", "duration", "generations", "nps", "satisfaction", "token_usage", "usage")

    def __init__(self, registry: MetricsRegistry) -> None:
        self.token_usage: HistogramFamily = registry.semconv_histogram(
            TOKEN_USAGE_METRIC, "Number of input and output tokens used.", _TOKEN_USAGE_KEYS, "{token}",
            TOKEN_USAGE_BUCKETS,
        )  # fmt: skip
        self.duration: HistogramFamily = registry.semconv_histogram(
            DURATION_METRIC, "GenAI operation duration.", _DURATION_KEYS, "s", OPERATION_DURATION_BUCKETS
        )
        self.generations: CounterFamily = registry.semconv_counter(
            GENERATIONS_METRIC, "Content generations, by content type and status.", _GENERATIONS_KEYS, "{generation}"
        )
        self.cost: CounterFamily = registry.semconv_counter(
            COST_METRIC, "Cost of GenAI operations as known by the caller, in USD.", _COST_KEYS, "USD"
        )
        self.usage: CounterFamily = registry.semconv_counter(
            USAGE_METRIC, "Units of a product feature used, by feature and customer.", _USAGE_KEYS, "{unit}"
        )
        self.satisfaction: HistogramFamily = registry.semconv_histogram(
            SATISFACTION_METRIC, "User satisfaction scores, 1 to 5.", _SATISFACTION_KEYS, "{score}",
            SATISFACTION_BUCKETS,
        )  # fmt: skip
        self.nps: HistogramFamily = registry.semconv_histogram(
            NPS_METRIC, "Net Promoter Score answers, 0 to 10.", _SATISFACTION_KEYS, "{score}", NPS_BUCKETS
        )


# Weak keys: a test's or a short-lived registry's families go with it.
_by_registry: weakref.WeakKeyDictionary[MetricsRegistry, _Families] = weakref.WeakKeyDictionary()
_default: _Families | None = None


def _families(registry: MetricsRegistry | None) -> _Families:
    global _default
    if registry is None:
        if _default is not None:
            return _default
        registry = default_registry()
    families = _by_registry.get(registry)
    if families is None:
        # Two threads racing here both get the same families: a second declaration returns the first.
        families = _by_registry[registry] = _Families(registry)
        if registry is default_registry():
            _default = families
            from otel_monitoring.telemetry import start_if_exporting

            start_if_exporting()  # a service that only records business metrics must still export
    return families


# --- Checks: all of them run before anything is recorded ----------------------------------------------------------


class _Refused(Exception):
    """Bad input to a public function: caught there, logged once per (function, argument), nothing recorded."""

    def __init__(self, function: str, argument: str, message: str) -> None:
        super().__init__(message)
        self.key = (function, argument)


# (function, argument) pairs already warned about: a caller that sends one bad value usually sends it on every
# call (a streaming path without usage), and one line says it all. Adding to a set is atomic under the GIL;
# two threads racing on the first refusal may both log, which is harmless.
_warned: set[tuple[str, str]] = set()


def _refuse(refused: _Refused) -> None:
    if refused.key not in _warned:
        _warned.add(refused.key)
        _logger.warning("%s; the call recorded nothing (later problems with this argument are not logged)", refused)


def _bad(function: str, argument: str, wanted: str, value: object) -> _Refused:
    return _Refused(function, argument, f"{function}: {argument} must be {wanted} (got {value!r})")


def _tokens(function: str, argument: str, value: object) -> int:
    if type(value) is int:
        if value >= 0:
            return value
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 0:
        return int(value)  # numpy integers and the like
    raise _bad(function, argument, "a whole number of tokens >= 0", value)


def _amount(function: str, argument: str, value: object, wanted: str) -> float:
    if type(value) is float or type(value) is int:
        if 0 <= value < _INF:  # also refuses NaN
            return value
    elif isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= float(value) < _INF:
        return float(value)
    raise _bad(function, argument, wanted, value)


def _name(function: str, argument: str, value: object) -> str:
    if type(value) is str and value:
        return value
    raise _bad(function, argument, "a non-empty string", value)


def _customer(function: str, value: object) -> str:
    """The customer id as a string ("" when absent), so 42 and "42" are one customer and one series."""
    if type(value) is str:
        return value
    if value is None:
        return _ABSENT
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    # The type only: a customer id is pseudonymized before any exporter sees it, and a log is an export.
    raise _Refused(
        function, "client_id", f"{function}: client_id must be a string, an int or None (got a {type(value).__name__})"
    )


# --- API ------------------------------------------------------------------------------------------------------


def record_generation(
    *,
    client_id: str | int | None,
    model: str,
    provider: str,
    input_tokens: int,
    output_tokens: int,
    content_type: str,
    status: str = STATUS_OK,
    duration: float | None = None,
    cost: float | None = None,
    operation: str = "chat",
    response_model: str | None = None,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
    registry: MetricsRegistry | None = None,
) -> None:
    """Record one GenAI operation that produced content for a customer.

    Records ``gen_ai.client.token.usage`` once per token type (``input``, ``output``), one
    ``content.generations``, ``gen_ai.client.operation.duration`` when ``duration`` (seconds) is given, and
    ``gen_ai.client.cost`` (USD) only when ``cost`` is given: without it the business processor prices the
    tokens from its table. ``input_tokens`` counts every prompt token, cached ones included, as the
    semantic conventions' ``gen_ai.usage.input_tokens``; ``cached_input_tokens`` (read from the provider's
    cache) and ``cache_write_tokens`` (written to it) say how many of them were billed differently.
    ``operation`` is the semconv ``gen_ai.operation.name`` (``chat``, ``generate_content``,
    ``text_completion``, ``embeddings``...). A ``status`` other than ``"ok"`` is also the duration's
    ``error.type`` (``"timeout"``, ``"rate_limited"``...): keep it to a few values.

    >>> record_generation(
    ...     client_id="acme-42", model="gpt-4o", provider="openai", input_tokens=1200, output_tokens=350,
    ...     content_type="article", duration=2.4, cached_input_tokens=1000,
    ... )

    Records nothing and logs one warning naming the argument (once per argument) for a missing, negative or
    non-whole token count, cache counts above ``input_tokens``, a negative or non-finite ``cost`` or
    ``duration``, or an empty name.
    """
    # Hot path: every check is a type test and a comparison, and each family lookup one tuple hash. The try
    # costs nothing until a check fails (zero-cost exception handling since Python 3.11).
    function = "record_generation"
    try:
        customer = client_id if type(client_id) is str else _customer(function, client_id)
        if type(model) is not str or not model:
            model = _name(function, "model", model)
        if type(provider) is not str or not provider:
            provider = _name(function, "provider", provider)
        if type(content_type) is not str or not content_type:
            content_type = _name(function, "content_type", content_type)
        if type(status) is not str or not status:
            status = _name(function, "status", status)
        if type(operation) is not str or not operation:
            operation = _name(function, "operation", operation)
        if response_model is None:
            response_model = _ABSENT
        elif type(response_model) is not str:
            raise _bad(function, "response_model", "a string or None", response_model)
        input_tokens = _tokens(function, "input_tokens", input_tokens)
        output_tokens = _tokens(function, "output_tokens", output_tokens)
        cached = _tokens(function, "cached_input_tokens", cached_input_tokens) if cached_input_tokens else 0
        written = _tokens(function, "cache_write_tokens", cache_write_tokens) if cache_write_tokens else 0
        uncached = input_tokens - cached - written
        if uncached < 0:
            raise _Refused(
                function,
                "cached_input_tokens + cache_write_tokens",
                f"{function}: cached_input_tokens + cache_write_tokens ({cached} + {written}) must not exceed "
                f"input_tokens ({input_tokens}), which counts every prompt token",
            )
        if duration is not None:
            duration = _amount(function, "duration", duration, "a finite number of seconds >= 0")
        if cost is not None:
            cost = _amount(function, "cost", cost, "a finite amount of USD >= 0")
    except _Refused as refused:
        _refuse(refused)
        return

    families = _default if registry is None and _default is not None else _families(registry)
    usage = families.token_usage
    # The uncached part of the prompt keeps gen_ai.token.cache absent, which the processor prices as plain
    # input and a reader unaware of the attribute sums with the rest: every input series adds up to all
    # prompt tokens. One observation per call on it, so its _count stays the number of operations.
    usage.labels(operation, provider, model, response_model, _INPUT, _ABSENT, customer).observe(uncached)
    if cached:
        usage.labels(operation, provider, model, response_model, _INPUT, _CACHE_READ, customer).observe(cached)
    if written:
        usage.labels(operation, provider, model, response_model, _INPUT, _CACHE_CREATION, customer).observe(written)
    usage.labels(operation, provider, model, response_model, _OUTPUT, _ABSENT, customer).observe(output_tokens)
    if duration is not None:
        error_type = _ABSENT if status == STATUS_OK else status
        families.duration.labels(operation, provider, model, response_model, error_type).observe(duration)
    families.generations.labels(content_type, status, customer).inc()
    if cost is not None:
        families.cost.labels(provider, model, response_model, customer).inc(cost)


def record_usage(
    *,
    client_id: str | int | None,
    feature: str,
    units: float = 1,
    registry: MetricsRegistry | None = None,
) -> None:
    """Count ``units`` of a product feature used by a customer, in the counter ``feature.usage``.

    >>> record_usage(client_id="acme-42", feature="pdf_export")
    >>> record_usage(client_id="acme-42", feature="transcription_minutes", units=12.5)

    ``feature`` becomes the attribute ``feature.name``: name features, never put ids or free text in it.
    Records nothing and logs one warning (once per argument) for an empty ``feature`` or a negative or
    non-finite ``units``.
    """
    function = "record_usage"
    try:
        customer = client_id if type(client_id) is str else _customer(function, client_id)
        if type(feature) is not str or not feature:
            feature = _name(function, "feature", feature)
        units = _amount(function, "units", units, "a finite number >= 0")
    except _Refused as refused:
        _refuse(refused)
        return
    families = _default if registry is None and _default is not None else _families(registry)
    families.usage.labels(feature, customer).inc(units)


_SCALES: Final = {CSAT_SCALE: (1, 5, False), NPS_SCALE: (0, 10, True)}  # name -> (lowest, highest, whole only)


def record_satisfaction(
    score: float,
    *,
    client_id: str | int | None = None,
    channel: str | None = None,
    scale: str = CSAT_SCALE,
    registry: MetricsRegistry | None = None,
) -> None:
    """Record one user's satisfaction answer on a declared scale.

    ``scale="csat"`` (the default): a score from 1 to 5 in the histogram ``user.satisfaction``, whose mean
    the business processor derives. ``scale="nps"``: a Net Promoter Score answer, a whole number from 0 to
    10, in its own histogram ``user.nps``, so that no mean ever mixes the two scales.

    >>> record_satisfaction(5, client_id="acme-42", channel="email")
    >>> record_satisfaction(9, channel="in_app", scale="nps")

    Records nothing and logs one warning naming the score and the scale (once per argument) for a score
    outside its scale, and for an unknown scale.
    """
    function = "record_satisfaction"
    try:
        bounds = _SCALES.get(scale)
        if bounds is None:
            raise _Refused(
                function, "scale", f"{function}: unknown scale {scale!r} (valid: {', '.join(sorted(_SCALES))})"
            )
        lowest, highest, whole = bounds
        if (
            isinstance(score, bool)
            or not isinstance(score, numbers.Real)
            or not lowest <= score <= highest  # also refuses NaN
            or (whole and score != math.floor(score))
        ):
            kind = "a whole number" if whole else "a number"
            raise _Refused(
                function,
                "score",
                f"{function}: score {score!r} is outside the {scale!r} scale ({kind} from {lowest} to {highest})",
            )
        customer = client_id if type(client_id) is str else _customer(function, client_id)
        if channel is None:
            channel = _ABSENT
        elif type(channel) is not str:
            raise _bad(function, "channel", "a string or None", channel)
    except _Refused as refused:
        _refuse(refused)
        return
    families = _default if registry is None and _default is not None else _families(registry)
    family = families.nps if scale == NPS_SCALE else families.satisfaction
    family.labels(channel, customer).observe(float(score))
