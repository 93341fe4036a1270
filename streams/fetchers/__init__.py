"""Fetchers, one module per tier, chosen by name through :func:`fetcher_class`."""

from __future__ import annotations

from streams.fetchers.base import Fetcher, FetchRequest, FetchResponse

__all__ = ["FetchRequest", "FetchResponse", "Fetcher"]
