"""The one backoff: capped doubling, jitter within [0.5, 1.5), reset."""

from __future__ import annotations

import random

import pytest

from schemas.backoff import Backoff

pytestmark = pytest.mark.unit


def test_doubles_up_to_the_cap_and_resets() -> None:
    b = Backoff(0.1, 1.0)
    assert [round(b.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.delay_s == 0.1 and b.next() == 0.1


def test_jitter_stays_within_half_and_one_and_a_half_of_the_nominal_delay() -> None:
    b = Backoff(1.0, 1.0, jitter=True, rng=random.Random(7))
    delays = [b.next() for _ in range(1000)]
    assert all(0.5 <= d < 1.5 for d in delays)
    assert max(delays) - min(delays) > 0.5  # it does vary
