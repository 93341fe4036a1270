"""The user-facing commands against the real stack: submit (progress, wait) and results."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Stack
from tests.integration.targets import TargetSite

pytestmark = pytest.mark.integration


def _run(stack: Stack, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**stack.env, "SCRAPIFIE_API_KEY": stack.api_key, "SCRAPIFIE_GATEWAY_URL": stack.gateway}
    return subprocess.run(
        [sys.executable, "-m", "scrapifie", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def test_submit_a_file_and_read_the_results(
    stack: Stack, target: TargetSite, tmp_path: Path
) -> None:
    urls = [f"{target.base}/page/{1000 + i}" for i in range(30)]
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(
        "# thirty pages\n" + "\n".join(urls[:29]) + "\n" + json.dumps({"url": urls[29]}) + "\n"
    )
    done = await asyncio.to_thread(_run, stack, "submit", str(jobs), "--wait", "90")
    assert done.returncode == 0, done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    assert [u for _, u in lines] == urls
    assert "finished" in done.stderr and "ok 30 failed 0" in done.stderr

    results = await asyncio.to_thread(_run, stack, "results", "--from-beginning")
    assert results.returncode == 0, results.stderr
    seen = {json.loads(line)["job_id"]: json.loads(line) for line in results.stdout.splitlines()}
    for job_id, _url in lines:
        assert seen[job_id]["status"] == "succeeded" and "content" not in seen[job_id]
