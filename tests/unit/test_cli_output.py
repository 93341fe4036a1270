"""The ``scrapifie`` command when its reader goes away (``... | head``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]

# A command that prints far more than a pipe holds, run through scrapifie.cli.main.
_SPAM = """
import argparse, sys
from scrapifie import cli

def spam(settings, args):
    for i in range(200_000):
        print("line", i)
    return 0

def parser():
    p = argparse.ArgumentParser()
    p.set_defaults(func=spam, command="spam")
    return p

cli._parser = parser
sys.exit(cli.main([]))
"""


def test_a_closed_pipe_ends_the_command_quietly() -> None:
    proc = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -c "$SPAM" | head -n 1; echo "${{PIPESTATUS[0]}}" >&2'],
        env={"SPAM": _SPAM, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout == "line 0\n"
    assert proc.stderr.strip() == "141", proc.stderr  # no traceback, SIGPIPE's status
