"""business: derive what finance and product ask for (API cost, usage per customer, generations, satisfaction).

The processor leaves its inputs as they came and appends the derived metrics to the same
``ResourceMetrics``, in one ``ScopeMetrics`` named ``otel_monitoring.business``. A resource that already
carries that scope was derived upstream (an application in embedded mode sending to the sidecar) and
is passed through, so running the processor twice never emits a series twice.

Inputs (names overridable in ``BusinessConfig``; the module constants are the ones the business API
records, so both sides share one spelling):

- ``gen_ai.client.token.usage`` (histogram, ``{token}``), as in the GenAI semantic conventions
  (https://github.com/open-telemetry/semantic-conventions-genai, ``model/gen-ai/metrics.yaml``): attribute
  ``gen_ai.token.type`` = ``input`` | ``output``; the model from ``gen_ai.response.model`` (what actually
  answered, so Azure deployment names and aliases are priced as the real model), else
  ``gen_ai.request.model``; the provider from ``gen_ai.provider.name``, else the older ``gen_ai.system``.
  Cached prompt tokens are told apart with the registry's ``gen_ai.token.cache`` attribute (``none``,
  ``read``, ``creation``), which splits the ``input`` series without changing their meaning: summed over
  ``gen_ai.token.cache``, ``input`` is still every prompt token. Our extension ``gen_ai.token.type =
  cached_input`` is read as ``input`` with ``gen_ai.token.cache = read``; those tokens must then not be
  counted again under ``input``. A Sum (counter) under this name is accepted too.
- ``gen_ai.client.cost`` (counter, ``USD``, ours): cost the caller knows exactly. For an account (model,
  provider, customer) that has one, it *wins*: that account's tokens are no longer priced from the table
  (tokens already priced before the explicit cost first appeared stay counted: a counter cannot go back).
- ``content.generations`` (counter, ``{generation}``, ours): attributes ``content.type``, ``status`` and the
  customer.
- ``user.satisfaction`` (histogram, ``{score}``, ours): a score on a declared scale (1 to 5 with
  ``SATISFACTION_BUCKETS``), customer optional.

Outputs (scope ``otel_monitoring.business``; Prometheus names after the standard translation):

- ``otel_monitoring.business.cost`` (monotonic sum, ``USD``; ``otel_monitoring_business_cost_USD_total``):
  ``model``, ``provider``, customer. Tokens x table price, or the explicit cost.
- ``otel_monitoring.business.tokens`` (monotonic sum, ``{token}``): ``model``, ``provider``, ``token_type``
  (``input``, ``cached_input``, ``cache_write``, ``output``, ``other``: the price category), customer.
- ``otel_monitoring.business.unpriced_tokens`` (monotonic sum, ``{token}``): ``model``, ``provider``,
  ``token_type``; tokens of models with no price (or of an unknown token type), never costed at zero.
- ``otel_monitoring.business.generations`` (sum, ``{generation}``): the input without the customer
  attribute, so a dashboard gets generations by ``content.type`` and ``status`` in a few series.
- ``otel_monitoring.business.satisfaction`` (histogram): the input's distribution without the customer.
- ``otel_monitoring.business.satisfaction.mean`` (gauge): sum / count of each satisfaction series, the
  mean since the series started (for a windowed mean use ``rate(_sum) / rate(_count)`` in PromQL).

The customer attribute (``client_id``; already a pseudonym when sanitize runs first, as in the default
pipeline) keeps its value for the ``top_customers`` customers with the highest cost (then tokens) since
they were first seen, and becomes ``"other"`` for the rest. An attribute absent from the input is
absent from the output. Cost, tokens and unpriced tokens are computed from each input series' increase
since the previous batch, with the rules of ``processors._merge`` (first sight, a new start time or a
lower value is a restart whose whole value is new), so an output only ever adds: a customer moving in
or out of the top N moves its later increases, never its past, and every output stays monotonic and
sums to the true total. Outputs are cumulative, or delta when the token usage input is delta.

The price table (``processors/prices.yaml``, see its header) is matched case-insensitively: the
provider's own section first, then the table of all providers; in each an exact key, else the longest
key that is a prefix of the model followed by a non-alphanumeric character (``gpt-4o-2024-08-06`` is
priced as ``gpt-4o``).

>>> from processors.component import ProcessorContext
>>> processor = FACTORY.create_from({"top_customers": 10}, ProcessorContext(component_id="business"))
>>> processor.prices.lookup("gpt-4o-2024-08-06", "openai") == processor.prices.lookup("gpt-4o")
True
"""

from __future__ import annotations

import heapq
import os
import threading
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Self

import yaml
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogram,
    Gauge,
    Histogram,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from processors._merge import SeriesMerger, attributes_key
from processors.component import ComponentConfig, Processor, ProcessorContext, ProcessorFactory

__all__ = [
    "BUSINESS_SCOPE",
    "CACHED_INPUT_TOKEN_TYPE",
    "CONTENT_TYPE_ATTRIBUTE",
    "COST_METRIC",
    "COST_OUTPUT",
    "CUSTOMER_ATTRIBUTE",
    "FACTORY",
    "GENERATIONS_METRIC",
    "GENERATIONS_OUTPUT",
    "LEGACY_PROVIDER_ATTRIBUTE",
    "MODEL_KEY",
    "OTHER_CUSTOMER",
    "PROVIDER_ATTRIBUTE",
    "PROVIDER_KEY",
    "REQUEST_MODEL_ATTRIBUTE",
    "RESPONSE_MODEL_ATTRIBUTE",
    "SATISFACTION_BUCKETS",
    "SATISFACTION_MEAN_OUTPUT",
    "SATISFACTION_METRIC",
    "SATISFACTION_OUTPUT",
    "SHIPPED_PRICES_FILE",
    "STATUS_ATTRIBUTE",
    "TOKENS_OUTPUT",
    "TOKEN_CACHE_ATTRIBUTE",
    "TOKEN_TYPE_ATTRIBUTE",
    "TOKEN_TYPE_KEY",
    "TOKEN_USAGE_METRIC",
    "UNPRICED_OUTPUT",
    "BusinessConfig",
    "BusinessProcessor",
    "ModelPrice",
    "PriceTable",
    "PriceTableError",
    "create_business_processor",
    "load_price_table",
]

# --- Inputs: the one place these names are spelled (the business API records them) ----------------------
TOKEN_USAGE_METRIC: Final = "gen_ai.client.token.usage"  # noqa: S105 - a name, not a secret
"""GenAI semconv histogram of tokens per operation, unit ``{token}``."""
COST_METRIC: Final = "gen_ai.client.cost"
"""Ours: a counter of cost in USD that the caller knows exactly (unit ``USD``); wins over the price table."""
GENERATIONS_METRIC: Final = "content.generations"
"""Ours: a counter of content generations (unit ``{generation}``)."""
SATISFACTION_METRIC: Final = "user.satisfaction"
"""Ours: a histogram of user satisfaction scores (unit ``{score}``)."""
SATISFACTION_BUCKETS: Final = (1.0, 2.0, 3.0, 4.0, 5.0)
"""Bucket bounds for a 1-to-5 score: one bucket per whole score."""

TOKEN_TYPE_ATTRIBUTE: Final = "gen_ai.token.type"  # noqa: S105 - a name, not a secret
TOKEN_CACHE_ATTRIBUTE: Final = "gen_ai.token.cache"  # noqa: S105 - a name, not a secret
REQUEST_MODEL_ATTRIBUTE: Final = "gen_ai.request.model"
RESPONSE_MODEL_ATTRIBUTE: Final = "gen_ai.response.model"
PROVIDER_ATTRIBUTE: Final = "gen_ai.provider.name"
LEGACY_PROVIDER_ATTRIBUTE: Final = "gen_ai.system"
CONTENT_TYPE_ATTRIBUTE: Final = "content.type"
STATUS_ATTRIBUTE: Final = "status"
CUSTOMER_ATTRIBUTE: Final = "client_id"
CACHED_INPUT_TOKEN_TYPE: Final = "cached_input"  # noqa: S105 - a name, not a secret
"""Our extension of ``gen_ai.token.type``: the same as ``input`` with ``gen_ai.token.cache=read``."""

# --- Outputs ------------------------------------------------------------------------------------------------
BUSINESS_SCOPE: Final = "otel_monitoring.business"
COST_OUTPUT: Final = "otel_monitoring.business.cost"
TOKENS_OUTPUT: Final = "otel_monitoring.business.tokens"
UNPRICED_OUTPUT: Final = "otel_monitoring.business.unpriced_tokens"
GENERATIONS_OUTPUT: Final = "otel_monitoring.business.generations"
SATISFACTION_OUTPUT: Final = "otel_monitoring.business.satisfaction"
SATISFACTION_MEAN_OUTPUT: Final = "otel_monitoring.business.satisfaction.mean"
MODEL_KEY: Final = "model"
PROVIDER_KEY: Final = "provider"
TOKEN_TYPE_KEY: Final = "token_type"  # noqa: S105 - a name, not a secret
OTHER_CUSTOMER: Final = "other"

# Name, description and unit of the outputs derived from tokens and explicit costs.
_ROUTED_OUTPUTS = (
    (COST_OUTPUT, "API cost: tokens times the price table, or the caller's explicit cost", "USD"),
    (TOKENS_OUTPUT, "Tokens by model, price category and customer (top N, the rest as 'other')", "{token}"),
    (UNPRICED_OUTPUT, "Tokens of models (or token types) with no price: not included in the cost", "{token}"),
)
SHIPPED_PRICES_FILE: Final = Path(__file__).with_name("prices.yaml")
"""The price table shipped with the package (``processors/prices.yaml``)."""

_OUTPUT_NAMES = frozenset(
    {COST_OUTPUT, TOKENS_OUTPUT, UNPRICED_OUTPUT, GENERATIONS_OUTPUT, SATISFACTION_OUTPUT, SATISFACTION_MEAN_OUTPUT}
)
_SCOPE = InstrumentationScope(BUSINESS_SCOPE)
_CUMULATIVE = AggregationTemporality.CUMULATIVE
_DELTA = AggregationTemporality.DELTA
_INF = float("inf")
_NEVER = -1  # start time of a series not seen yet: any real start differs, so first sight counts as a restart
_LOOKUP_CACHE_SIZE = 4096  # (model, provider) pairs are few; a sender inventing them without end resets the cache

# Roles of the watched input metrics.
_TOKENS, _COST, _GENERATIONS, _SATISFACTION = range(4)

# Price categories, which are also the values of the ``token_type`` output attribute.
_INPUT, _OUTPUT, _CACHED_INPUT, _CACHE_WRITE, _OTHER = "input", "output", "cached_input", "cache_write", "other"


# --- Price table ------------------------------------------------------------------------------------------

_Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class ModelPrice(BaseModel):
    """List prices of one model in USD per 1,000,000 tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    input: _Price
    """Prompt tokens not served from the provider's cache."""

    output: _Price
    """Generated tokens (reasoning tokens included, as providers bill them)."""

    cached_input: _Price
    """Prompt tokens read from the provider's cache; equal to ``input`` where there is no cache discount."""

    cache_write: _Price | None = None
    """Prompt tokens written to the provider's cache (Anthropic bills them above ``input``); unset means ``input``."""

    def per_token(self, category: str) -> float | None:
        """USD per single token of a price category, or None for a category with no price."""
        if category == _INPUT:
            per_million = self.input
        elif category == _OUTPUT:
            per_million = self.output
        elif category == _CACHED_INPUT:
            per_million = self.cached_input
        elif category == _CACHE_WRITE:
            per_million = self.input if self.cache_write is None else self.cache_write
        else:
            return None
        return per_million / 1_000_000


class _PriceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelPrice] = {}
    providers: dict[str, dict[str, ModelPrice]] = {}


class PriceTableError(ValueError):
    """A price file that cannot be read or is not a valid table; the message names the file and the problem."""


class PriceTable:
    """Prices by model, and by model for one provider; ``lookup`` matches exactly, then by longest prefix.

    >>> table = PriceTable({"gpt-4o": ModelPrice(input=2.5, output=10, cached_input=1.25)})
    >>> table.lookup("GPT-4o-2024-08-06").output
    10.0
    >>> table.lookup("gpt-4ox") is None
    True
    """

    def __init__(
        self,
        models: Mapping[str, ModelPrice],
        providers: Mapping[str, Mapping[str, ModelPrice]] | None = None,
        *,
        source: str = "prices",
    ) -> None:
        self.source = source
        self._models = _fold_case(models, source)
        self._providers = {
            provider: _fold_case(prices, f"{source}: providers.{provider}")
            for provider, prices in (providers or {}).items()
        }
        self._cache: dict[tuple[str, str | None], ModelPrice | None] = {}

    def __len__(self) -> int:
        return len(self._models) + sum(len(prices) for prices in self._providers.values())

    def entries(self) -> dict[str, dict[str, ModelPrice]]:
        """Every entry by section: ``""`` for all providers, else the provider name (keys in lower case)."""
        return {"": dict(self._models), **{provider: dict(prices) for provider, prices in self._providers.items()}}

    def with_overrides(
        self,
        models: Mapping[str, ModelPrice] | None = None,
        providers: Mapping[str, Mapping[str, ModelPrice]] | None = None,
    ) -> PriceTable:
        """A new table where these entries replace (or add to) this table's, key by key."""
        merged_models = {**self._models, **_fold_case(models or {}, "prices")}
        merged_providers = {provider: dict(prices) for provider, prices in self._providers.items()}
        for provider, prices in (providers or {}).items():
            merged_providers.setdefault(provider, {}).update(_fold_case(prices, f"provider_prices.{provider}"))
        return PriceTable(merged_models, merged_providers, source=self.source)

    def lookup(self, model: str, provider: str | None = None) -> ModelPrice | None:
        """The price of ``model`` as served by ``provider``, or None when no key matches."""
        cache_key = (model, provider)
        try:
            return self._cache[cache_key]
        except KeyError:
            pass
        folded = model.lower()
        found = None
        provider_prices = self._providers.get(provider) if provider is not None else None
        if provider_prices:
            found = _match(provider_prices, folded)
        if found is None:
            found = _match(self._models, folded)
        if len(self._cache) >= _LOOKUP_CACHE_SIZE:
            self._cache.clear()
        self._cache[cache_key] = found
        return found


def _fold_case(prices: Mapping[str, ModelPrice], where: str) -> dict[str, ModelPrice]:
    folded: dict[str, ModelPrice] = {}
    spelled: dict[str, str] = {}
    for key, price in prices.items():
        lower = key.lower()
        if not lower:
            raise ValueError(f"{where}: a model name is empty")
        if lower in spelled:
            raise ValueError(f"{where}: {spelled[lower]!r} and {key!r} name the same model (matching ignores case)")
        spelled[lower] = key
        folded[lower] = price
    # Longest keys first, so the first prefix found while scanning is the longest one.
    return dict(sorted(folded.items(), key=lambda item: -len(item[0])))


def _match(prices: Mapping[str, ModelPrice], model: str) -> ModelPrice | None:
    exact = prices.get(model)
    if exact is not None:
        return exact
    for key, price in prices.items():  # longest first (see _fold_case)
        if len(key) < len(model) and model.startswith(key) and not model[len(key)].isalnum():
            return price
    return None


def load_price_table(
    prices_file: str | os.PathLike[str] | None = None,
    prices: Mapping[str, ModelPrice] | None = None,
    provider_prices: Mapping[str, Mapping[str, ModelPrice]] | None = None,
) -> PriceTable:
    """Read a price file (default: the table shipped as ``processors/prices.yaml``) and apply overrides.

    This is the processor's only file access; ``BusinessProcessor`` takes the resulting table, so tests
    and hosts can build one in memory. Raises ``PriceTableError`` naming the file and what is wrong.
    """
    if prices_file is None:
        # Beside this module rather than through importlib.resources: the same path in a wheel, a source
        # checkout and an editable install (where ``processors`` may resolve as a namespace package).
        path = os.fspath(SHIPPED_PRICES_FILE)
        where = f"prices_file: the shipped table {path!r}"
    else:
        path = os.fspath(prices_file)
        where = f"prices_file: {path!r}"
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as error:
        raise PriceTableError(f"{where} cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise PriceTableError(f"{where} is not UTF-8 text: {error.reason} at byte {error.start}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        position = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise PriceTableError(f"{where} is not valid YAML{position}: {problem}") from None
    if not isinstance(raw, dict):
        raise PriceTableError(
            f"{where} must be a mapping with 'models' and optionally 'providers' (got {type(raw).__name__})"
        )
    try:
        parsed = _PriceFile.model_validate(raw)
    except ValidationError as error:
        raise PriceTableError(f"{where}: {_describe(error)}") from None
    try:
        table = PriceTable(parsed.models, parsed.providers, source=where)
    except ValueError as error:
        raise PriceTableError(str(error)) from None
    if prices or provider_prices:
        table = table.with_overrides(prices, provider_prices)
    return table


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    got = first.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    more = len(error.errors()) - 1
    return f"{location}: {first['msg']}{shown}" + (
        f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    )


# --- Config -----------------------------------------------------------------------------------------------


class BusinessConfig(ComponentConfig):
    """What the business processor prices and how it groups customers; ``BusinessConfig()`` is valid."""

    prices_file: str | None = None
    """Path of a YAML price table in the format of ``processors/prices.yaml``; unset means that shipped
    table. A relative path is read from the working directory. Read once, when the processor is built."""

    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    """Prices (USD per 1M tokens: ``input``, ``output``, ``cached_input``, optional ``cache_write``) by
    model name, for any provider; each replaces or adds the file's entry with the same name."""

    provider_prices: dict[str, dict[str, ModelPrice]] = Field(default_factory=dict)
    """Prices by ``gen_ai.provider.name``, then model name; searched before ``prices`` for that provider."""

    top_customers: int = Field(default=20, ge=0)
    """How many customers (highest cost, then tokens) keep their pseudonym on the derived series; the
    rest are summed into ``client_id="other"``. 0 puts every customer in ``other``."""

    customer_attribute: str = Field(default=CUSTOMER_ATTRIBUTE, min_length=1)
    """The attribute naming the customer, on the inputs and on the derived series."""

    token_usage_metric: str = Field(default=TOKEN_USAGE_METRIC, min_length=1)
    """Name of the token usage input (GenAI semconv histogram)."""

    cost_metric: str = Field(default=COST_METRIC, min_length=1)
    """Name of the explicit cost input (a counter in USD recorded by the caller)."""

    generations_metric: str = Field(default=GENERATIONS_METRIC, min_length=1)
    """Name of the content generations input (a counter)."""

    satisfaction_metric: str = Field(default=SATISFACTION_METRIC, min_length=1)
    """Name of the user satisfaction input (a histogram of scores)."""

    expiry_seconds: float = Field(default=3600.0, gt=0)
    """Input series, customers and derived series not seen for this long are forgotten, which bounds
    memory. Keep it well above the longest gap between two exports of a live series: a cumulative input
    that comes back after being forgotten has its whole value counted again."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        names = {
            "token_usage_metric": self.token_usage_metric,
            "cost_metric": self.cost_metric,
            "generations_metric": self.generations_metric,
            "satisfaction_metric": self.satisfaction_metric,
        }
        seen: dict[str, str] = {}
        for key, name in names.items():
            if name in _OUTPUT_NAMES:
                raise ValueError(f"{key}: {name!r} is one of the processor's own outputs; name an input metric")
            if name in seen:
                raise ValueError(f"{key}: {name!r} is already the {seen[name]}; each input needs its own metric")
            seen[name] = key
        return self


# --- Processor state ----------------------------------------------------------------------------------------


class _Series:
    """One token usage or explicit cost input series: where it was, and what it means (worked out once)."""

    __slots__ = (
        "account",
        "count",
        "customer",
        "last_seen",
        "model",
        "provider",
        "start",
        "token_type",
        "unit_price",
        "value",
    )

    def __init__(
        self,
        model: str | None,
        provider: str | None,
        customer: Hashable,
        token_type: str,
        unit_price: float | None,
    ) -> None:
        self.model = model
        self.provider = provider
        self.customer = customer
        self.token_type = token_type
        self.unit_price = unit_price  # USD per token; None: no price
        self.account = (model, provider, customer)  # what an explicit cost is recorded for
        self.start = _NEVER
        self.value: float = 0.0
        self.count = 0
        self.last_seen = 0


class _Output:
    __slots__ = ("attributes", "last_seen", "start", "time", "value")

    def __init__(self, attributes: dict[str, Any], start: int) -> None:
        self.attributes = attributes
        self.start = start
        self.time = 0
        self.value: float = 0.0
        self.last_seen = 0


class _Outputs:
    """Derived cost, token and unpriced-token series of one resource."""

    __slots__ = ("cost", "tokens", "unpriced")

    def __init__(self) -> None:
        self.cost: dict[tuple[Any, ...], _Output] = {}
        self.tokens: dict[tuple[Any, ...], _Output] = {}
        self.unpriced: dict[tuple[Any, ...], _Output] = {}

    def sweep(self, horizon: int) -> None:
        for outputs in (self.cost, self.tokens, self.unpriced):
            for key in [key for key, output in outputs.items() if output.last_seen < horizon]:
                del outputs[key]

    def count(self) -> int:
        return len(self.cost) + len(self.tokens) + len(self.unpriced)


# An instrumentation scope as (name, version): what tells apart two meters recording the same metric.
_ScopeKey = tuple[str, str]


class _ResourceState:
    """Everything remembered for one resource (one process, in the sidecar one worker)."""

    __slots__ = ("explicit", "inputs", "last_seen", "outputs")

    def __init__(self) -> None:
        # ((scope name, scope version), metric name) -> attribute set -> series; two instrumentations
        # recording the same metric are two inputs, not one whose value jumps between them.
        self.inputs: dict[tuple[_ScopeKey, str], dict[Hashable, _Series]] = {}
        self.explicit: dict[tuple[Any, ...], int] = {}  # account -> last time an explicit cost was seen
        self.outputs = _Outputs()
        self.last_seen = 0

    def sweep(self, horizon: int) -> None:
        for key, series_by_attributes in list(self.inputs.items()):
            for attributes in [a for a, series in series_by_attributes.items() if series.last_seen < horizon]:
                del series_by_attributes[attributes]
            if not series_by_attributes:
                del self.inputs[key]
        for account in [account for account, seen in self.explicit.items() if seen < horizon]:
            del self.explicit[account]
        self.outputs.sweep(horizon)

    def count(self) -> int:
        return sum(len(series) for series in self.inputs.values()) + len(self.explicit) + self.outputs.count()


class _Customer:
    __slots__ = ("cost", "last_seen", "tokens")

    def __init__(self) -> None:
        self.cost = 0.0
        self.tokens = 0.0
        self.last_seen = 0


# One point's contribution, worked out in the first pass and routed to outputs once the ranking is known:
# (series, token increase or None, cost increase or None, unpriced, start, time)
_Entry = tuple[_Series, float | None, float | None, bool, int, int]


class _ResourceBatch:
    __slots__ = ("entries", "index", "metrics", "state", "temporality")

    def __init__(self, index: int, state: _ResourceState) -> None:
        self.index = index
        self.state = state
        self.entries: list[_Entry] = []
        self.metrics: list[Metric] = []
        self.temporality = _CUMULATIVE


# --- Processor ----------------------------------------------------------------------------------------------


class BusinessProcessor(Processor):
    """Derives cost, usage per customer, generations and satisfaction; see the module docstring.

    A batch without any watched metric is returned as the same object after one dictionary lookup per
    metric, so the processor costs next to nothing where no business data flows.
    """

    def __init__(
        self,
        config: BusinessConfig | None = None,
        context: ProcessorContext | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        config = config if config is not None else BusinessConfig()
        context = context if context is not None else ProcessorContext()
        self.prices = (
            prices
            if prices is not None
            else load_price_table(config.prices_file, config.prices, config.provider_prices)
        )
        self._clock = context.clock
        self._expiry_ns = int(config.expiry_seconds * 1e9)
        self._customer_key = config.customer_attribute
        self._top_n = config.top_customers
        self._roles = {
            config.token_usage_metric: _TOKENS,
            config.cost_metric: _COST,
            config.generations_metric: _GENERATIONS,
            config.satisfaction_metric: _SATISFACTION,
        }
        self._merger = SeriesMerger(clock=context.clock, expiry_seconds=config.expiry_seconds)
        self._resources: dict[Hashable, _ResourceState] = {}
        self._customers: dict[Hashable, _Customer] = {}
        self._top: frozenset[Hashable] = frozenset()
        self._everyone_on_top = True
        # Each reader has a pipeline (and so an instance) of its own, but one reader may still collect from
        # two threads at once (two concurrent Prometheus scrapes, a force_flush during a periodic export),
        # and series_count and shutdown come from other threads: the state stays behind a lock.
        self._lock = threading.Lock()
        self._last_sweep = context.clock()
        # The pipeline's own metrics: counts only, labelled by component id, never by user data.
        component = context.component_id or "business"
        self._unpriced_series = context.registry.counter(
            "otel_monitoring_business_unpriced_series_total",
            "Token usage series found with no price for their model or token type (counted once per series)",
            ("component",),
        ).labels(component=component)
        self._resets = context.registry.counter(
            "otel_monitoring_business_input_resets_total",
            "Cumulative token usage or cost input series that restarted (new start time or lower value)",
            ("component",),
        ).labels(component=component)

    def series_count(self) -> int:
        """Input series, derived series and customers remembered (bounded by ``expiry_seconds``)."""
        with self._lock:
            return (
                sum(state.count() for state in self._resources.values())
                + len(self._customers)
                + self._merger.series_count()
            )

    def shutdown(self) -> None:
        with self._lock:
            self._resources.clear()
            self._customers.clear()
            self._top = frozenset()
            self._everyone_on_top = True

    def process(self, data: MetricsData) -> MetricsData:
        roles = self._roles
        found: list[tuple[int, ResourceMetrics, list[tuple[int, _ScopeKey, Metric]]]] = []
        for index, resource_metrics in enumerate(data.resource_metrics):
            matched: list[tuple[int, _ScopeKey, Metric]] = []
            derived_upstream = False
            for scope_metrics in resource_metrics.scope_metrics:
                if scope_metrics.scope.name == BUSINESS_SCOPE:
                    derived_upstream = True
                    break
                scope = (scope_metrics.scope.name, scope_metrics.scope.version or "")
                for metric in scope_metrics.metrics:
                    role = roles.get(metric.name)
                    if role is not None:
                        matched.append((role, scope, metric))
            if matched and not derived_upstream:
                found.append((index, resource_metrics, matched))
        if not found:
            return data
        with self._lock:
            now = self._clock()
            self._sweep(now)
            batches = self._derive(found, now)
        resources = list(data.resource_metrics)
        changed = False
        for batch in batches:
            if batch.metrics:
                changed = True
                original = resources[batch.index]
                scopes = [*original.scope_metrics, ScopeMetrics(_SCOPE, batch.metrics, "")]
                resources[batch.index] = ResourceMetrics(original.resource, scopes, original.schema_url)
        return MetricsData(resources) if changed else data

    # First pass per resource: increases of token and cost inputs, merged generations and satisfaction.
    def _derive(
        self, found: list[tuple[int, ResourceMetrics, list[tuple[int, _ScopeKey, Metric]]]], now: int
    ) -> list[_ResourceBatch]:
        batches: list[_ResourceBatch] = []
        for index, resource_metrics, matched in found:
            resource_key = attributes_key(resource_metrics.resource.attributes)
            state = self._resources.get(resource_key)
            if state is None:
                state = self._resources[resource_key] = _ResourceState()
            state.last_seen = now
            batch = _ResourceBatch(index, state)
            batch.temporality = _output_temporality(matched)
            # Explicit costs first: an account that has one must be known before its tokens are priced.
            for wanted in (_COST, _TOKENS):
                for role, scope, metric in matched:
                    if role == wanted:
                        self._track(batch, scope, metric, role == _COST, now)
            for wanted in (_GENERATIONS, _SATISFACTION):
                metrics = [(scope, metric) for role, scope, metric in matched if role == wanted]
                if metrics:
                    batch.metrics.extend(self._regroup(metrics, wanted, resource_key))
            batches.append(batch)
        self._price_and_rank(batches, now)
        for batch in batches:
            self._route(batch, now)
        return batches

    def _track(self, batch: _ResourceBatch, scope: _ScopeKey, metric: Metric, explicit_cost: bool, now: int) -> None:
        # Hot path when business data flows: one attribute-set hash and one dict lookup per point; what a
        # series means (model, customer, price) is worked out once, when the series is first seen.
        data = metric.data
        if isinstance(data, Histogram | ExponentialHistogram):
            histogram = True
        elif isinstance(data, Sum):
            histogram = False
        else:
            return  # a gauge has no increase to count
        delta = data.aggregation_temporality is _DELTA
        state = batch.state
        inputs = state.inputs.get((scope, metric.name))
        if inputs is None:
            inputs = state.inputs[(scope, metric.name)] = {}
        entries = batch.entries
        explicit = state.explicit
        for point in data.data_points:
            if histogram:
                value: float = point.sum  # type: ignore[union-attr]
                count: int = point.count  # type: ignore[union-attr]
            else:
                value = point.value  # type: ignore[union-attr]
                count = 0
            if not -_INF < value < _INF:
                continue  # NaN or infinite: remembering it would make every later value look like a restart
            attributes = point.attributes or {}
            key = attributes_key(attributes)
            series = inputs.get(key)
            if series is None:
                series = inputs[key] = self._new_series(attributes, explicit_cost)
            start = point.start_time_unix_nano
            if delta:
                increase = value
            elif series.start == start and value >= series.value and count >= series.count:
                increase = value - series.value
            else:
                if series.start != _NEVER:
                    self._resets.inc()
                increase = value
            series.start, series.value, series.count, series.last_seen = start, value, count, now
            if increase < 0:
                increase = 0.0  # a negative delta on a counter is invalid input, not a refund
            if explicit_cost:
                explicit[series.account] = now
                entries.append((series, None, increase, False, start, point.time_unix_nano))
            else:
                entries.append((series, increase, None, False, start, point.time_unix_nano))

    def _new_series(self, attributes: Mapping[str, Any], explicit_cost: bool) -> _Series:
        model = _text(attributes.get(RESPONSE_MODEL_ATTRIBUTE) or attributes.get(REQUEST_MODEL_ATTRIBUTE))
        provider = _text(attributes.get(PROVIDER_ATTRIBUTE) or attributes.get(LEGACY_PROVIDER_ATTRIBUTE))
        customer = _hashable(attributes.get(self._customer_key))
        if explicit_cost:
            return _Series(model, provider, customer, "", None)
        token_type = _token_category(attributes)
        price = self.prices.lookup(model, provider) if model is not None else None
        unit_price = price.per_token(token_type) if price is not None else None
        if unit_price is None:
            self._unpriced_series.inc()
        return _Series(model, provider, customer, token_type, unit_price)

    # Second pass, over every resource: price token increases, add them to the customers' totals, re-rank.
    def _price_and_rank(self, batches: list[_ResourceBatch], now: int) -> None:
        customers = self._customers
        ranking_changed = False
        for batch in batches:
            explicit = batch.state.explicit
            priced: list[_Entry] = []
            for series, tokens, cost, _, start, time in batch.entries:
                unpriced = False
                if tokens is not None:
                    if series.account in explicit:
                        cost = None  # the caller's explicit cost for this account wins
                    elif series.unit_price is None:
                        unpriced = True
                    else:
                        cost = tokens * series.unit_price
                priced.append((series, tokens, cost, unpriced, start, time))
                customer = series.customer
                if customer is None:
                    continue
                totals = customers.get(customer)
                if totals is None:
                    totals = customers[customer] = _Customer()
                    ranking_changed = True
                totals.last_seen = now
                if cost:
                    totals.cost += cost
                    ranking_changed = True
                if tokens:
                    totals.tokens += tokens
                    ranking_changed = True
            batch.entries = priced
        if ranking_changed:
            self._rank()

    def _rank(self) -> None:
        if len(self._customers) <= self._top_n:
            self._everyone_on_top, self._top = True, frozenset()
            return
        ranked = heapq.nlargest(
            self._top_n, self._customers.items(), key=lambda item: (item[1].cost, item[1].tokens, str(item[0]))
        )
        self._everyone_on_top, self._top = False, frozenset(customer for customer, _ in ranked)

    # Third pass, per resource: add each contribution to its output series and emit the touched ones.
    def _route(self, batch: _ResourceBatch, now: int) -> None:
        if not batch.entries:
            return
        delta = batch.temporality is _DELTA
        # Delta outputs carry this batch's increases only; cumulative outputs keep adding across batches.
        outputs = _Outputs() if delta else batch.state.outputs
        customer_key = self._customer_key
        everyone_on_top, top = self._everyone_on_top, self._top
        touched_cost: dict[tuple[Any, ...], _Output] = {}
        touched_tokens: dict[tuple[Any, ...], _Output] = {}
        touched_unpriced: dict[tuple[Any, ...], _Output] = {}
        for series, tokens, cost, unpriced, start, time in batch.entries:
            customer = series.customer
            if customer is not None and not everyone_on_top and customer not in top:
                customer = OTHER_CUSTOMER
            model, provider, token_type = series.model, series.provider, series.token_type
            if tokens is not None:
                key: tuple[Any, ...] = (model, provider, token_type, customer)
                output = outputs.tokens.get(key)
                if output is None:
                    attributes = _attributes(model, provider, token_type, customer_key, customer)
                    output = outputs.tokens[key] = _Output(attributes, start)
                _add(output, tokens, start, time, now, delta)
                touched_tokens[key] = output
                if unpriced:
                    key = (model, provider, token_type)
                    output = outputs.unpriced.get(key)
                    if output is None:
                        attributes = _attributes(model, provider, token_type, customer_key, None)
                        output = outputs.unpriced[key] = _Output(attributes, start)
                    _add(output, tokens, start, time, now, delta)
                    touched_unpriced[key] = output
            if cost is not None:
                key = (model, provider, customer)
                output = outputs.cost.get(key)
                if output is None:
                    output = outputs.cost[key] = _Output(
                        _attributes(model, provider, None, customer_key, customer), start
                    )
                _add(output, cost, start, time, now, delta)
                touched_cost[key] = output
        temporality = _DELTA if delta else _CUMULATIVE
        for (name, description, unit), touched in zip(
            _ROUTED_OUTPUTS, (touched_cost, touched_tokens, touched_unpriced), strict=True
        ):
            if touched:
                points = [NumberDataPoint(o.attributes, o.start, o.time, o.value) for o in touched.values()]
                batch.metrics.append(Metric(name, description, unit, Sum(points, temporality, True)))

    def _regroup(self, metrics: list[tuple[_ScopeKey, Metric]], role: int, resource_key: Hashable) -> list[Metric]:
        """Generations or satisfaction without the customer attribute, merged with ``SeriesMerger``.

        The points of every scope of the resource go to one merge (one output series per attribute set), each
        tagged with its scope: two meters recording equal attributes are two inputs, each with its own start
        time, not one input that seems to restart at every batch.
        """
        first = metrics[0][1].data
        if not isinstance(first, Sum | Gauge | Histogram):
            return []
        customer_key = self._customer_key
        regrouped = [
            (point, {key: value for key, value in (point.attributes or {}).items() if key != customer_key}, scope)
            for scope, metric in metrics
            if type(metric.data) is type(first)  # one output metric: later metrics of another type are skipped
            for point in metric.data.data_points
        ]
        if role == _GENERATIONS:
            template = Metric(
                GENERATIONS_OUTPUT,
                "Content generations without the customer attribute",
                metrics[0][1].unit or "{generation}",
                first,
            )
            merged = self._merger.merge(template, regrouped, "sum", origin=resource_key)
            return [merged] if merged is not None else []
        template = Metric(
            SATISFACTION_OUTPUT,
            "User satisfaction without the customer attribute",
            metrics[0][1].unit or "{score}",
            first,
        )
        merged = self._merger.merge(template, regrouped, "avg", origin=resource_key)
        if merged is None:
            return []
        result = [merged]
        if isinstance(merged.data, Histogram):
            means = [
                NumberDataPoint(p.attributes, p.start_time_unix_nano, p.time_unix_nano, p.sum / p.count)
                for p in merged.data.data_points
                if p.count
            ]
            if means:
                description = (
                    "Mean satisfaction score (sum / count) of each series: since it started, or of the batch for delta"
                )
                result.append(Metric(SATISFACTION_MEAN_OUTPUT, description, merged.unit, Gauge(means)))
        return result

    def _sweep(self, now: int) -> None:
        if now - self._last_sweep < self._expiry_ns // 4:
            return
        self._last_sweep = now
        horizon = now - self._expiry_ns
        for key, state in list(self._resources.items()):
            if state.last_seen < horizon:
                del self._resources[key]
            else:
                state.sweep(horizon)
        stale = [customer for customer, totals in self._customers.items() if totals.last_seen < horizon]
        for customer in stale:
            del self._customers[customer]
        if stale:
            self._rank()


def _output_temporality(matched: list[tuple[int, _ScopeKey, Metric]]) -> AggregationTemporality:
    """The token usage input's temporality (else the explicit cost's): the derived sums follow it."""
    for wanted in (_TOKENS, _COST):
        for role, _, metric in matched:
            if role == wanted and isinstance(metric.data, Sum | Histogram | ExponentialHistogram):
                return metric.data.aggregation_temporality
    return _CUMULATIVE


def _add(output: _Output, amount: float, start: int, time: int, now: int, delta: bool) -> None:
    output.value += amount
    output.last_seen = now
    if time > output.time:
        output.time = time
    if delta and start < output.start:
        output.start = start  # a delta output spans its earliest input; a cumulative one keeps its first start


def _attributes(
    model: str | None, provider: str | None, token_type: str | None, customer_key: str, customer: Hashable
) -> dict[str, Any]:
    """Attributes of a derived series; what the input did not say stays absent rather than invented."""
    attributes: dict[str, Any] = {}
    if model is not None:
        attributes[MODEL_KEY] = model
    if provider is not None:
        attributes[PROVIDER_KEY] = provider
    if token_type is not None:
        attributes[TOKEN_TYPE_KEY] = token_type
    if customer is not None:
        attributes[customer_key] = customer
    return attributes


def _token_category(attributes: Mapping[str, Any]) -> str:
    kind = attributes.get(TOKEN_TYPE_ATTRIBUTE)
    if kind == "input":
        cache = attributes.get(TOKEN_CACHE_ATTRIBUTE)
        if cache is None or cache == "none":
            return _INPUT
        if cache == "read":
            return _CACHED_INPUT
        if cache == "creation":
            return _CACHE_WRITE
        return _OTHER
    if kind == "output":
        return _OUTPUT
    if kind == CACHED_INPUT_TOKEN_TYPE:
        return _CACHED_INPUT
    return _OTHER


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _hashable(value: Any) -> Hashable:
    if value is None or value == "":
        return None
    return value if isinstance(value, str | int | float | bool) else str(value)


def create_business_processor(config: BusinessConfig, context: ProcessorContext) -> BusinessProcessor:
    """The factory's ``create``: reads the price table now, so a bad file fails when the pipeline is built."""
    return BusinessProcessor(
        config, context, load_price_table(config.prices_file, config.prices, config.provider_prices)
    )


FACTORY = ProcessorFactory("business", BusinessConfig, create_business_processor)
