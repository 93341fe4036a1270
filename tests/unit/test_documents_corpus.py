"""documents.derive on the checked-in corpus (tests/corpus/<case>/): each case's page.html with
its meta.json (content_type, url, status, headers, formats, only_main_content) and, for
extraction, extract.json; the expected documents sit beside it. ``UPDATE_CORPUS=1`` rewrites
them: read the diff before committing it, they are what a user gets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from documents import derive
from schemas.extract import parse_extract_rules

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "page.html").is_file())
# format → the file holding what it should be
FILES = {
    "markdown": "expected.md",
    "text": "expected.txt",
    "clean_html": "expected.clean.html",
    "links": "links.json",
    "metadata": "metadata.json",
    "extract": "extract.expected.json",
}
UPDATE = os.environ.get("UPDATE_CORPUS") == "1"


def _derive(case: Path) -> dict[str, bytes]:
    meta = json.loads((case / "meta.json").read_text())
    rules_file = case / "extract.json"
    rules = parse_extract_rules(json.loads(rules_file.read_text())) if rules_file.exists() else None
    return derive(
        (case / "page.html").read_bytes(),
        content_type=meta["content_type"],
        url=meta["url"],
        status=meta["status"],
        headers=meta.get("headers", {}),
        formats=meta["formats"],
        only_main_content=meta.get("only_main_content", True),
        extract=rules,
    )


@pytest.mark.parametrize("name", CASES)
def test_case(name: str) -> None:
    case = CORPUS / name
    docs = _derive(case)
    assert docs, "the case asks for no derived format"
    for fmt, data in docs.items():
        path = case / FILES[fmt]
        if fmt in ("links", "metadata", "extract"):
            got: object = json.loads(data)
            if UPDATE:
                path.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n")
            assert got == json.loads(path.read_text()), fmt
        else:
            if UPDATE:
                path.write_bytes(data)
            assert data.decode() == path.read_text(encoding="utf-8"), fmt


def test_corpus_is_not_empty() -> None:
    assert len(CASES) >= 10
