"""`scrapifie verify`: consistency checks against a live deployment (to be filled in)."""

from __future__ import annotations

import argparse

from scrapifie.settings import Settings


def run_verify(settings: Settings, args: argparse.Namespace) -> int:
    raise SystemExit("scrapifie verify is not implemented yet")
