"""Politeness: robots.txt and per-site rate/concurrency limits, owned by the worker of a site's
partition (tier topics are keyed by registrable domain)."""

from streams.politeness.limits import SiteLimit, SiteLimiter
from streams.politeness.robots import RobotsCache, RobotsVerdict

__all__ = ["RobotsCache", "RobotsVerdict", "SiteLimit", "SiteLimiter"]
