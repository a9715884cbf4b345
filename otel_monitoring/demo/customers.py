"""The demo's customers: who sends traffic, which model their plan uses, and how happy they are.

The sample service seeds its SQLite database from this list and the traffic driver picks customers from it, so
both sides agree without talking. The ids are what the service records; the metrics backend only ever sees
their pseudonyms.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CUSTOMERS", "Customer"]


@dataclass(frozen=True)
class Customer:
    """One customer of the content platform.

    >>> CUSTOMERS[0].id
    'acme-media'
    """

    id: str
    """What the service records as ``client_id`` (pseudonymized before export)."""
    weight: float
    """Share of the traffic, relative to the other customers."""
    model: str
    """The model their plan generates with (priced by the business processor's table)."""
    provider: str
    """``gen_ai.provider.name`` of that model."""
    scores: tuple[int, ...]
    """The satisfaction scores (1 to 5) they give while the service works; unhappy customers give low ones."""


CUSTOMERS: tuple[Customer, ...] = (
    Customer("acme-media", 5.0, "gpt-4o", "openai", (4, 5, 5)),
    Customer("blue-harbor-news", 3.0, "gpt-4o-mini", "openai", (4, 4, 5)),
    Customer("corvid-labs", 2.0, "claude-sonnet-4-5", "anthropic", (2, 2, 3)),  # unhappy
    Customer("delta-learning", 2.0, "gpt-4o-mini", "openai", (1, 2, 3)),  # unhappy
    Customer("ember-shop", 1.0, "gemini-2.5-flash", "gcp.gemini", (4, 5)),
    Customer("fjord-travel", 1.0, "claude-haiku-4-5", "anthropic", (3, 4, 5)),
)
