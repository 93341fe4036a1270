"""The OpenAPI document is generated from the definitions it describes and is valid OpenAPI
3.1: every route, option, status and error code, and the deployment's limits."""

from __future__ import annotations

from typing import Any, get_args

import jsonschema
import pytest
from openapi_spec_validator import validate

from connectors.config import GatewayConfig
from connectors.gateway import Gateway
from connectors.gateway.api import SUBMISSION_FIELDS
from connectors.gateway.openapi import EXAMPLES, build_openapi
from connectors.gateway.views import JobView
from schemas.errors import ErrorCode
from schemas.kafka import KafkaConfig
from schemas.options import OPTION_NAMES, JobLimits, parse_options
from schemas.records import AttemptOutcome, JobStatus, ResourceType, ScreenshotMode, WaitUntil

pytestmark = pytest.mark.unit

LIMITS = JobLimits(max_body_bytes=3_000_000, max_timeout_s=120)
TIERS = ("http", "browser", "stealth")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return build_openapi(LIMITS, TIERS, 1000, 60)


def _schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return doc["components"]["schemas"][name]  # type: ignore[no-any-return]


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    validate(doc)


def test_every_route_of_the_gateway_is_documented_and_nothing_else(doc: dict[str, Any]) -> None:
    from prometheus_client import CollectorRegistry

    gateway = Gateway(GatewayConfig(), KafkaConfig(), "", None, CollectorRegistry())  # type: ignore[arg-type]
    routes = {
        (r.resource.canonical, r.method.lower())
        for r in gateway.app().router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert routes == documented


def test_every_option_is_documented_with_its_limits(doc: dict[str, Any]) -> None:
    options = _schema(doc, "FetchOptions")
    assert list(options["properties"]) == list(OPTION_NAMES)
    assert options["additionalProperties"] is False
    props = options["properties"]
    assert props["max_body_bytes"]["anyOf"][0]["maximum"] == LIMITS.max_body_bytes
    assert props["timeout_s"]["anyOf"][0]["maximum"] == LIMITS.max_timeout_s
    assert props["wait_until"]["anyOf"][0]["enum"] == list(get_args(WaitUntil))
    assert props["screenshot"]["anyOf"][0]["enum"] == list(get_args(ScreenshotMode))
    assert props["block_resources"]["items"]["enum"] == list(get_args(ResourceType))
    assert all(p.get("description") for p in props.values())


def test_submissions_statuses_outcomes_and_error_codes_come_from_their_definitions(
    doc: dict[str, Any],
) -> None:
    assert set(_schema(doc, "JobSubmission")["properties"]) == SUBMISSION_FIELDS
    assert _schema(doc, "JobSubmission")["additionalProperties"] is False
    assert _schema(doc, "JobStatus")["enum"] == [s.value for s in JobStatus]
    assert _schema(doc, "AttemptOutcome")["enum"] == [o.value for o in AttemptOutcome]
    assert _schema(doc, "ErrorCode")["enum"] == [c.value for c in ErrorCode]
    assert list(_schema(doc, "JobView")["properties"]) == list(JobView.__dataclass_fields__)


def _resolver_schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """A component as a standalone JSON Schema (refs resolved against the document)."""
    return {**_schema(doc, name), "components": doc["components"]}


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_every_example_matches_the_schema_and_passes_the_validator(
    doc: dict[str, Any], example: str
) -> None:
    value = EXAMPLES[example]["value"]
    jsonschema.validate(value, _resolver_schema(doc, "JobSubmission"))
    parse_options(value.get("options") or {}, LIMITS)


@pytest.mark.parametrize(
    "options",
    [
        {"max_body_bytes": LIMITS.max_body_bytes + 1},
        {"timeout_s": 0},
        {"headers": {"Content-Length": "1"}},
        {"headers": {"X:Y": "1"}},
        {"wait_for": ""},
        {"unknown": 1},
    ],
)
def test_what_the_schema_refuses_the_validator_refuses(
    doc: dict[str, Any], options: dict[str, Any]
) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"url": "https://example.com/", "options": options},
            _resolver_schema(doc, "JobSubmission"),
        )
    with pytest.raises(ValueError):
        parse_options(options, LIMITS)


def test_examples_for_tiers_a_deployment_does_not_run_are_left_out() -> None:
    doc = build_openapi(LIMITS, ("http",), 1000, 60)
    examples = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert "browser with a screenshot" not in examples["examples"]
