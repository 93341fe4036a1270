"""The one backoff: capped exponential delays, optionally jittered, for every retry loop that
waits for a backend (Kafka, PostgreSQL, object storage) to come back."""

from __future__ import annotations

import asyncio
import random

__all__ = ["Backoff"]


class Backoff:
    """Delays ``initial_s``, twice that, ... up to ``cap_s``. With ``jitter`` each delay is
    drawn from [0.5, 1.5) times its nominal value, so that many clients retrying the same
    backend do not retry in step. ``reset()`` starts over (after a success)."""

    def __init__(
        self,
        initial_s: float = 0.2,
        cap_s: float = 5.0,
        *,
        jitter: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self._initial_s = initial_s
        self._cap_s = cap_s
        self._jitter = jitter
        self._rng = rng or random.Random()
        self._nominal_s = initial_s

    @property
    def delay_s(self) -> float:
        """The nominal delay :meth:`sleep` waits next (for log lines)."""
        return self._nominal_s

    def next(self) -> float:
        """The next delay in seconds, and advance."""
        nominal = self._nominal_s
        self._nominal_s = min(nominal * 2, self._cap_s)
        return nominal * (0.5 + self._rng.random()) if self._jitter else nominal

    def reset(self) -> None:
        self._nominal_s = self._initial_s

    async def sleep(self) -> None:
        await asyncio.sleep(self.next())
