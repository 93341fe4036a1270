"""OpenAPI 3.1 description of the gateway, served at /openapi.json."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}


def _resp(desc: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": desc}
    if schema is not None:
        out["content"] = {"application/json": {"schema": schema}}
    return out


_ERRORS = {
    "400": _resp("Invalid input; the message says what to fix.", _ERROR),
    "401": _resp("Missing or unknown API key.", _ERROR),
    "413": _resp("Body or batch too large.", _ERROR),
    "500": _resp(
        "A defect in the gateway (code internal); the message names the logged trace id.", _ERROR
    ),
    "503": _resp("A backend is unavailable; retry after Retry-After seconds.", _ERROR),
}
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

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Scrapifie gateway", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    }
                },
            },
            "JobRequest": {
                "type": "object",
                "required": ["url"],
                "properties": {
                    "url": {"type": "string", "format": "uri", "maxLength": 8192},
                    "tier": {"type": "string", "enum": ["http", "browser", "stealth", "auto"]},
                    "max_tier": {"type": "string", "enum": ["http", "browser", "stealth"]},
                    "job_id": {
                        "type": "string",
                        "format": "uuid",
                        "description": "Optional idempotency key.",
                    },
                    "options": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
                            "max_body_bytes": {"type": "integer", "minimum": 1},
                            "headers": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    },
                },
            },
            "Accepted": {
                "type": "object",
                "properties": {
                    "job_id": {"type": "string"},
                    "status": {"const": "queued"},
                    "tier": {"type": "string"},
                    "trace_id": {"type": "string"},
                    "links": {"type": "object"},
                },
            },
            "Job": {
                "type": "object",
                "properties": {
                    "job_id": {"type": "string"},
                    "tenant": {"type": "string"},
                    "url": {"type": "string"},
                    "status": {
                        "type": "string",
                        "enum": ["queued", "running", "succeeded", "failed"],
                    },
                    "tier": {"type": ["string", "null"]},
                    "attempts": {"type": "integer"},
                    "http_status": {"type": ["integer", "null"]},
                    "error_code": {"type": ["string", "null"]},
                    "error_message": {"type": ["string", "null"]},
                    "final_url": {"type": ["string", "null"]},
                    "content_type": {"type": ["string", "null"]},
                    "content_bytes": {"type": ["integer", "null"]},
                    "content_sha256": {"type": ["string", "null"]},
                    "created_at": {"type": "string", "format": "date-time"},
                    "finished_at": {"type": ["string", "null"], "format": "date-time"},
                },
            },
        },
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
                        "schema": {"type": "number", "minimum": 0},
                        "description": "Seconds to wait for the final result.",
                    },
                    {
                        "name": "X-Request-ID",
                        "in": "header",
                        "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]+$"},
                        "description": "Becomes the trace id of every event of the job (visible"
                        " ASCII; the first 128 characters are kept).",
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}}
                    },
                },
                "responses": {
                    "200": _resp("Finished within ?wait.", {"$ref": "#/components/schemas/Job"}),
                    "202": _resp("Accepted.", {"$ref": "#/components/schemas/Accepted"}),
                    **_ERRORS,
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
                                "properties": {
                                    "jobs": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/JobRequest"},
                                    }
                                },
                            }
                        }
                    },
                },
                "responses": {"202": _resp("Accepted."), **_ERRORS},
            }
        },
        "/v1/jobs/{job_id}": {
            "get": {
                "summary": "Job status and metadata",
                "parameters": [_JOB_ID],
                "responses": {
                    "200": _resp("The job.", {"$ref": "#/components/schemas/Job"}),
                    "404": _resp("Unknown job (or another tenant's).", _ERROR),
                    **_ERRORS,
                },
            }
        },
        "/v1/jobs/{job_id}/content": {
            "get": {
                "summary": "The fetched body",
                "parameters": [_JOB_ID],
                "responses": {
                    "200": {
                        "description": "The body, with its original Content-Type: as stored"
                        " (Content-Encoding: gzip) when Accept-Encoding allows gzip, else"
                        " decompressed and streamed (chunked).",
                        "headers": {
                            **_SAFE,
                            "Content-Encoding": {"schema": {"const": "gzip"}},
                            "Vary": {"schema": {"const": "Accept-Encoding"}},
                        },
                    },
                    "404": _resp("Unknown job or no content.", _ERROR),
                    **_ERRORS,
                },
            }
        },
        "/v1/usage": {
            "get": {
                "summary": "Credits and attempts of the caller's tenant",
                "responses": {"200": _resp("Usage.")},
            }
        },
        "/healthz": {
            "get": {"summary": "Liveness", "security": [], "responses": {"200": _resp("Alive.")}}
        },
        "/readyz": {
            "get": {
                "summary": "Readiness (Kafka and PostgreSQL)",
                "security": [],
                "responses": {"200": _resp("Ready."), "503": _resp("Not ready.", _ERROR)},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {"200": {"description": "Text exposition format."}},
            }
        },
    },
}
