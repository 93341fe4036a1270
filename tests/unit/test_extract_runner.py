"""Extraction rules run in a child process under a deadline: a rule that costs quadratic time on
a big page is stopped, and the next job's rules run in a fresh process."""

from __future__ import annotations

import json
import time

import pytest

from schemas.extract import parse_extract_rules, rules_to_json
from streams.tier.extract_runner import ExtractRunner, ExtractTimeout

pytestmark = pytest.mark.unit

PAGE = b"<html><body><h1>Title</h1><p class=price>1,299.00</p></body></html>"
BIG = b"<html><body>" + b"<div><p>x</p></div>" * 40_000 + b"</body></html>"


def _rules(raw: dict[str, object]) -> str:
    return rules_to_json(parse_extract_rules(raw))


async def _extract(runner: ExtractRunner, body: bytes, rules: str) -> bytes:
    return await runner.extract(
        body,
        content_type="text/html",
        url="http://example.com/",
        status=200,
        headers={},
        rules_json=rules,
    )


async def test_rules_are_applied_in_the_child() -> None:
    runner = ExtractRunner(timeout_s=30)
    try:
        out = await _extract(
            runner, PAGE, _rules({"t": "h1", "p": {"css": ".price", "type": "number"}})
        )
        assert json.loads(out) == {"t": "Title", "p": 1299}
    finally:
        runner.close()


async def test_a_rule_past_the_deadline_is_stopped_and_the_next_job_still_runs() -> None:
    runner = ExtractRunner(timeout_s=1.0)
    try:
        await _extract(runner, PAGE, _rules({"t": "h1"}))  # the child is up (start-up is slow)
        slow = _rules(
            {"n": {"xpath": "//*[count(following::*) > count(preceding::*)]", "all": True}}
        )
        started = time.monotonic()
        with pytest.raises(ExtractTimeout, match="ran past 1 s"):
            await _extract(runner, BIG, slow)
        assert time.monotonic() - started < 10  # stopped at the deadline, not when done
        out = await _extract(runner, PAGE, _rules({"t": "h1"}))
        assert json.loads(out) == {"t": "Title"}
    finally:
        runner.close()
