"""The gateway's OpenAPI 3.1 document, generated from the definitions it describes.

Nothing here restates a field, an enum or a limit: the job options come from
``schemas.records.FetchOptions`` with the deployment's ``JobLimits`` and the validator's rules
(``schemas.options``), statuses, outcomes and error codes from their enums, the answers from the
views the gateway builds them with (``connectors.gateway.views``). A test holds the document against
the running gateway.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Final

from pydantic import TypeAdapter

from connectors.gateway.api import SUBMISSION_FIELDS
from connectors.gateway.openapi_parts import EXAMPLES, EXTRACT_RULE
from connectors.gateway.usage import GROUP_BY
from connectors.gateway.views import AttemptEvent, EscalationEvent, FormatView, JobView
from schemas.cache import MAX_AGE_S
from schemas.errors import ErrorCode
from schemas.extract import MAX_NAME_CHARS, MAX_RULES
from schemas.options import (
    FORBIDDEN_HEADERS,
    FORMAT_NAMES,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    MAX_SHORT_STRING,
    JobLimits,
)
from schemas.records import AUTO, FetchOptions, JobStatus

__all__ = ["EXAMPLES", "build_openapi"]

_REF = "#/components/schemas/{model}"
_TOKEN_PATTERN = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"
_PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
_SHORT_STRINGS = ("wait_for", "session_id", "egress_pool")


# Submissions every deployment accepts (the tests post each to a running gateway).
def _schemas(cls: type[Any]) -> dict[str, Any]:
    """JSON Schemas of ``cls`` and everything it refers to, by name, with field docs."""
    schema = TypeAdapter(cls).json_schema(ref_template=_REF, mode="serialization")
    out: dict[str, Any] = schema.pop("$defs", {})
    out[cls.__name__] = schema
    for name, sub in out.items():
        sub.pop("title", None)
        for prop in sub.get("properties", {}).values():
            prop.pop("title", None)
        model = _DATACLASSES.get(name)
        if model is not None:
            for f in dataclasses.fields(model):
                doc = f.metadata.get("doc")
                if doc and f.name in sub.get("properties", {}):
                    sub["properties"][f.name]["description"] = doc
    return out


def _options_schema(limits: JobLimits) -> dict[str, Any]:
    """FetchOptions as a request accepts them: every field optional, the validator's limits."""
    schema: dict[str, Any] = _schemas(FetchOptions)["FetchOptions"]
    props = schema["properties"]
    for prop in props.values():
        prop.pop("default", None)
    props["timeout_s"] = {
        **props["timeout_s"],
        "anyOf": [
            {"type": "number", "exclusiveMinimum": 0, "maximum": limits.max_timeout_s},
            {"type": "null"},
        ],
    }
    props["max_body_bytes"] = {
        **props["max_body_bytes"],
        "anyOf": [
            {"type": "integer", "minimum": 1, "maximum": limits.max_body_bytes},
            {"type": "null"},
        ],
    }
    props["headers"].update(
        maxProperties=MAX_HEADERS,
        propertyNames={
            "pattern": _TOKEN_PATTERN,
            "not": {"pattern": _any_case(sorted(FORBIDDEN_HEADERS))},
            "description": "Refused (in any case): " + ", ".join(sorted(FORBIDDEN_HEADERS)),
        },
        additionalProperties={
            "type": "string",
            "maxLength": MAX_HEADER_VALUE,
            "pattern": r"^[^\x00-\x08\x0a-\x1f\x7f]*$",
        },
    )
    props["block_resources"]["uniqueItems"] = True
    props["formats"] = {
        "type": "array",
        "items": {"type": "string", "enum": list(FORMAT_NAMES)},
        "minItems": 1,
        "description": props["formats"]["description"]
        + " Listed once each, in order; extract rules and the screenshot option add theirs.",
    }
    props["max_age_s"] = {
        **props["max_age_s"],
        "anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_AGE_S}, {"type": "null"}],
    }
    props["extract"] = {
        "anyOf": [
            {
                "type": "object",
                "minProperties": 1,
                "maxProperties": MAX_RULES,
                "propertyNames": {"minLength": 1, "maxLength": MAX_NAME_CHARS},
                "additionalProperties": {"$ref": _REF.format(model="ExtractRule")},
            },
            {"type": "null"},
        ],
        "description": "Extraction rules: field name → rule. A selector that does not compile"
        " answers 400; one that matches nothing gives null (or [] with all).",
    }
    for name in _SHORT_STRINGS:
        props[name]["anyOf"] = [
            {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_SHORT_STRING,
                "pattern": _PRINTABLE_PATTERN,
            },
            {"type": "null"},
        ]
    schema["additionalProperties"] = False
    schema.pop("required", None)
    return schema


def _any_case(names: list[str]) -> str:
    """A regex matching any of ``names`` whatever their case (JSON Schema has no /i flag)."""
    spell = (
        "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in name)
        for name in names
    )
    return "^(" + "|".join(spell) + ")$"


def _submission_schema(tiers: tuple[str, ...]) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "description": "A job. Fields not listed here are refused (400).",
        "required": ["url"],
        "additionalProperties": False,
        "properties": {
            "url": {"type": "string", "format": "uri", "description": "http or https."},
            "tier": {
                "type": "string",
                "enum": [*tiers, AUTO],
                "description": "Where the job starts; auto lets the router choose by site.",
            },
            "max_tier": {
                "type": "string",
                "enum": list(tiers),
                "description": "How far a blocked job may escalate (default: the last tier).",
            },
            "job_id": {
                "type": "string",
                "format": "uuid",
                "description": "Idempotency key: the same id is the same job.",
            },
            "options": {"$ref": _REF.format(model="FetchOptions")},
        },
    }
    assert set(schema["properties"]) == SUBMISSION_FIELDS
    return schema


def _resp(desc: str, schema: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"description": desc, **extra}
    if schema is not None:
        out["content"] = {"application/json": {"schema": {"$ref": _REF.format(model=schema)}}}
    return out


_ERRORS = {
    "400": _resp("Invalid input; the message says what to fix.", "Error"),
    "401": _resp("Missing, unknown or revoked API key.", "Error"),
    "403": _resp("The API key's tenant is disabled (tenant_disabled).", "Error"),
    "413": _resp("Body or batch too large.", "Error"),
    "500": _resp("A defect (code internal); the message names the logged trace id.", "Error"),
    "503": _resp("A backend is unavailable; retry after Retry-After seconds.", "Error"),
}
# What a submission can answer besides its own statuses: the account's limits.
_LIMITS = {
    "402": _resp(
        "insufficient_credits: the account cannot pay for the job(s) at their starting tier.",
        "Error",
    ),
    "429": _resp(
        "rate_limited (over the account's submissions per second; see Retry-After) or"
        " too_many_jobs (over its jobs not ended).",
        "Error",
        headers={"Retry-After": {"schema": {"type": "integer"}}},
    ),
}
_CHARGED = {
    "X-Credits-Charged": {
        "schema": {"type": "integer"},
        "description": "What the job cost (jobs that have ended).",
    }
}
# What a read can answer besides its own statuses (no body to be invalid or too large).
_READ_ERRORS = {k: v for k, v in _ERRORS.items() if k not in ("400", "413")}
_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
    "description": "Any spelling of the UUID; anything else is an unknown job (404).",
}
_SAFE = {
    "X-Content-Type-Options": {"schema": {"const": "nosniff"}},
    "Content-Security-Policy": {
        "schema": {"const": "sandbox"},
        "description": "A fetched page never runs as the gateway's origin.",
    },
}
_DATACLASSES: Final[dict[str, type[Any]]] = {
    c.__name__: c for c in (FetchOptions, JobView, AttemptEvent, EscalationEvent, FormatView)
}


def build_openapi(
    limits: JobLimits, tiers: tuple[str, ...], max_batch: int, max_wait_s: float
) -> dict[str, Any]:
    """The document for a gateway with these limits and tiers."""
    schemas: dict[str, Any] = {
        **_schemas(JobView),
        "FetchOptions": _options_schema(limits),
        "JobSubmission": _submission_schema(tiers),
        "ExtractRule": EXTRACT_RULE,
        "JobStatus": {
            "type": "string",
            "enum": [s.value for s in JobStatus],
            "description": "queued until a final result: succeeded or failed.",
        },
        "ErrorCode": {
            "type": "string",
            "enum": [c.value for c in ErrorCode],
            "description": "Why a job failed (see the README's table).",
        },
        "Accepted": {
            "type": "object",
            "required": ["job_id", "status", "tier", "trace_id", "links"],
            "properties": {
                "job_id": {"type": "string", "format": "uuid"},
                "status": {"const": JobStatus.QUEUED.value},
                "tier": {"type": "string"},
                "trace_id": {"type": "string"},
                "links": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
    }
    view = schemas["JobView"]["properties"]
    view["status"] = {"$ref": _REF.format(model="JobStatus")}
    view["error_code"] = {
        "anyOf": [{"$ref": _REF.format(model="ErrorCode")}, {"type": "null"}],
        "description": "Set when the job failed.",
    }
    # Only the examples this deployment accepts (a tier it runs no worker for is refused).
    examples = {
        name: ex for name, ex in EXAMPLES.items() if ex["value"].get("tier", AUTO) in (*tiers, AUTO)
    }
    submission = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": _REF.format(model="JobSubmission")},
                "examples": examples,
            }
        },
    }
    job = {
        "200": _resp("The job and its story.", "JobView", headers=_CHARGED),
        "404": _resp("Unknown job.", "Error"),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Scrapifie gateway", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/jobs": {
                "post": {
                    "summary": "Submit a job",
                    "parameters": [
                        {
                            "name": "wait",
                            "in": "query",
                            "schema": {"type": "number", "minimum": 0, "maximum": max_wait_s},
                            "description": "Seconds to wait for the final result (200 if it"
                            " comes in time, else 202).",
                        },
                        {
                            "name": "inline",
                            "in": "query",
                            "schema": {"type": "boolean", "default": False},
                            "description": "With ?wait: the job's formats up to 64 KiB each in"
                            " `inline` (text as strings, links/metadata/extract as JSON).",
                        },
                        {
                            "name": "X-Request-ID",
                            "in": "header",
                            "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]+$"},
                            "description": "Becomes the trace id of every event of the job"
                            " (visible ASCII; the first 128 characters are kept).",
                        },
                    ],
                    "requestBody": submission,
                    "responses": {
                        "200": _resp("Finished within ?wait.", "JobView", headers=_CHARGED),
                        "202": _resp("Accepted.", "Accepted"),
                        **_ERRORS,
                        **_LIMITS,
                    },
                }
            },
            "/v1/jobs/batch": {
                "post": {
                    "summary": "Submit many jobs",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["jobs"],
                                    "properties": {
                                        "jobs": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": max_batch,
                                            "items": {"$ref": _REF.format(model="JobSubmission")},
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _resp("Accepted, one entry per job."),
                        **_ERRORS,
                        **_LIMITS,
                    },
                }
            },
            "/v1/jobs/{job_id}": {
                "get": {
                    "summary": "A job: status, result metadata, attempts and escalations",
                    "parameters": [_JOB_ID],
                    "responses": {**job, **_READ_ERRORS},
                }
            },
            "/v1/jobs/{job_id}/content": {
                "get": {
                    "summary": "The fetched page, or one of its formats",
                    "parameters": [
                        _JOB_ID,
                        {
                            "name": "format",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": list(FORMAT_NAMES)},
                            "description": "Absent: the page as fetched (raw). html: transcoded"
                            " to UTF-8. Others: the job must have asked for them (see the"
                            " job's formats).",
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The body (raw: its original Content-Type; text"
                            " formats: UTF-8; links, metadata, extract: JSON): as stored"
                            " (Content-Encoding: gzip) when Accept-Encoding allows gzip, else"
                            " decompressed and streamed (chunked).",
                            "headers": {
                                **_SAFE,
                                "Content-Encoding": {"schema": {"const": "gzip"}},
                                "Vary": {"schema": {"const": "Accept-Encoding"}},
                            },
                        },
                        "400": _resp("Not a format (invalid_format).", "Error"),
                        "404": _resp(
                            "Unknown job, no content (not succeeded), or a format the job did not"
                            " ask for (format_not_available).",
                            "Error",
                        ),
                        **_READ_ERRORS,
                    },
                }
            },
            "/v1/jobs/{job_id}/screenshot": {
                "get": {
                    "summary": "The screenshot (browser tiers, options.screenshot)",
                    "parameters": [_JOB_ID],
                    "responses": {
                        "200": {
                            "description": "A PNG.",
                            "headers": _SAFE,
                            "content": {"image/png": {}},
                        },
                        "404": _resp("Unknown job, or no screenshot.", "Error"),
                        **_READ_ERRORS,
                    },
                }
            },
            "/v1/usage": {
                "get": {
                    "summary": "Credits and attempts of the caller's tenant",
                    "parameters": [
                        {
                            "name": "from",
                            "in": "query",
                            "schema": {"type": "string", "format": "date"},
                            "description": "First UTC day (inclusive); default: all time.",
                        },
                        {
                            "name": "to",
                            "in": "query",
                            "schema": {"type": "string", "format": "date"},
                            "description": "Last UTC day (inclusive).",
                        },
                        {
                            "name": "group_by",
                            "in": "query",
                            "schema": {"type": "string", "enum": list(GROUP_BY)},
                            "description": "Adds rows per tier, day or error code.",
                        },
                    ],
                    "responses": {
                        "200": _resp("Usage."),
                        "400": _resp("A bad parameter.", "Error"),
                        **_READ_ERRORS,
                    },
                }
            },
            "/healthz": {
                "get": {"summary": "Liveness", "security": [], "responses": {"200": _resp("OK")}}
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness (Kafka and PostgreSQL)",
                    "security": [],
                    "responses": {"200": _resp("Ready."), "503": _resp("Not ready.", "Error")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": [],
                    "responses": {"200": {"description": "Text exposition format."}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1."}},
                }
            },
        },
    }
