"""Parts of the OpenAPI document that are data: request examples and the extraction-rule
schema (connectors/gateway/openapi.py assembles the document)."""

from __future__ import annotations

from typing import Any, Final

from schemas.extract import MAX_DEPTH, MAX_NAME_CHARS, MAX_RULES, MAX_SELECTOR_CHARS, VALUE_TYPES

__all__ = ["EXAMPLES", "EXTRACT_RULE"]

# Every example must be accepted by the gateway (tests/integration/test_job_story.py).
EXAMPLES: Final[dict[str, dict[str, Any]]] = {
    "minimal": {"value": {"url": "https://example.com/"}},
    "http tier with options": {
        "value": {
            "url": "https://example.com/products?page=2",
            "tier": "http",
            "job_id": "6f0c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f",
            "options": {
                "timeout_s": 20,
                "max_body_bytes": 2_000_000,
                "headers": {"Accept-Language": "en"},
            },
        }
    },
    "browser with a screenshot": {
        "value": {
            "url": "https://example.com/app",
            "tier": "browser",
            "options": {
                "wait_until": "networkidle",
                "wait_for": "#content",
                "screenshot": "viewport",
                "block_resources": ["font", "media"],
            },
        }
    },
    "markdown, links and metadata": {
        "value": {
            "url": "https://example.com/blog/post",
            "options": {"formats": ["markdown", "links", "metadata"]},
        }
    },
    "extraction rules": {
        "value": {
            "url": "https://example.com/shop",
            "tier": "http",
            "options": {
                "extract": {
                    "title": "h1",
                    "products": {
                        "css": ".product",
                        "all": True,
                        "fields": {
                            "name": ".name",
                            "price": {"css": ".price", "type": "number"},
                            "link": {"css": "a", "attr": "href"},
                        },
                    },
                }
            },
        }
    },
}


_SELECTOR = {"type": "string", "minLength": 1, "maxLength": MAX_SELECTOR_CHARS}
EXTRACT_RULE: Final[dict[str, Any]] = {
    "description": f"A CSS selector, or a rule object (at most {MAX_RULES} rules in all, nested"
    f" {MAX_DEPTH} deep).",
    "anyOf": [
        {**_SELECTOR, "description": "CSS selector: the text of the first match"},
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "css": _SELECTOR,
                "xpath": _SELECTOR,
                "attr": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_NAME_CHARS,
                    "description": "take this attribute (href and src made absolute)",
                },
                "all": {"type": "boolean", "description": "a list of every match"},
                "type": {"type": "string", "enum": list(VALUE_TYPES)},
                "fields": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": {"$ref": "#/components/schemas/ExtractRule"},
                    "description": "an object per match, these rules relative to it",
                },
            },
            "oneOf": [{"required": ["css"]}, {"required": ["xpath"]}],
        },
    ],
}
