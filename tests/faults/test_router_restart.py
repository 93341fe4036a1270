"""The router keeps routing after a restart: its table (what it learned per site) is rebuilt
from its changelog topic, and auto jobs (the default tier) submitted after the restart end."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from tests.faults.conftest import StackFactory
from tests.faults.helpers import poll_final, submit
from tests.faults.infra import SlowSite

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
async def test_auto_jobs_end_after_the_router_restarts_with_history(
    make_stack: StackFactory, slow_site: SlowSite, record: Callable[..., None], sig: signal.Signals
) -> None:
    stack = await make_stack()
    before = await submit(stack, [f"{slow_site.base}/page/{i}" for i in range(20)])
    assert await poll_final(stack.dsn, before.ids, timeout_s=60) is not None
    stack.stop("router", sig)  # its table now has history in the changelog
    stack.start("router")
    after = await submit(stack, [f"{slow_site.base}/page/{i}" for i in range(20, 40)])
    done = await poll_final(stack.dsn, after.ids, timeout_s=180)
    record(f"router restart ({sig.name})", final_after_restart=done is not None)
    assert done is not None, stack.log_tail()
