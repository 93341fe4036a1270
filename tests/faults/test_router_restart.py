"""The router keeps routing after a restart, and keeps what it learned recently: auto jobs (the
default tier) submitted after it restarts end, routed with the memory its warm-up rebuilt from
scrape.routing."""

from __future__ import annotations

import signal
from collections.abc import Callable

import psycopg
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
    stack.stop("router", sig)  # it has routed and learned: history on scrape.routing
    stack.start("router")
    after = await submit(stack, [f"{slow_site.base}/page/{i}" for i in range(20, 40)])
    done = await poll_final(stack.dsn, after.ids, timeout_s=120)
    async with await psycopg.AsyncConnection.connect(stack.dsn) as conn:
        cur = await conn.execute(
            "SELECT router_reason FROM jobs WHERE job_id = ANY(%s)", (after.ids,)
        )
        reasons = sorted({r[0] for r in await cur.fetchall()})
    record(f"router restart ({sig.name})", final_after_restart=done is not None, reasons=reasons)
    assert done is not None, stack.log_tail()
    # The site had been working on http: the warmed-up memory says so (not "no history").
    assert "cheapest tier is working" in reasons, reasons
