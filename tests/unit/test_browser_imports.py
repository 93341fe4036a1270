"""Every process builds the settings, browser tier or not: they must not import Playwright.

Each check runs in a fresh interpreter, since this one has Playwright loaded already."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "imports",
    [
        "scrapifie.settings",
        "streams.browser",  # the package's names load on first use
        "streams.browser.config",
        "streams.browser.request",  # the tier workers build requests before any browser runs
    ],
)
def test_importing_does_not_import_playwright(imports: str) -> None:
    code = f"import sys, {imports}; assert 'playwright' not in sys.modules, 'playwright imported'"
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_the_package_loads_its_names_on_first_use() -> None:
    import streams.browser
    from streams.browser.fetcher import BrowserFetcher

    assert streams.browser.BrowserFetcher is BrowserFetcher
    with pytest.raises(AttributeError):
        _ = streams.browser.NoSuchName  # type: ignore[attr-defined]
