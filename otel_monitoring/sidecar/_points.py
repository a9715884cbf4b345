"""Counting data points, the unit of every count the sidecar reports (a leaf: exporters and the service import it)."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import MetricsData

__all__ = ["count_points"]


def count_points(data: MetricsData) -> int:
    """Data points in a batch (a histogram point counts once).

    >>> count_points(MetricsData([]))
    0
    """
    return sum(
        len(metric.data.data_points)
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    )
