"""docker-compose.yml, the Dockerfile and Prometheus agree with each other and with the code.

No Docker engine runs here (CI has none either), so this is the structural check: YAML that
parses, references that resolve, and a worker for every tier that can start in the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from connectors.sinks.ledger import LedgerSink
from connectors.sinks.results import ResultsSink
from schemas import SPECS, TopicSet
from schemas.topics import Role
from scrapifie.settings import Settings
from streams.browser.config import HEADLESS_SHELL

ROOT = Path(__file__).resolve().parents[2]
TIERS = ("http", "browser", "stealth")


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _workers(services: dict[str, Any]) -> dict[str, str]:
    """service name -> tier, for the services that run ``scrapifie worker --tier T``."""
    out = {}
    for name, svc in services.items():
        cmd = svc.get("command") or []
        if cmd[:2] == ["worker", "--tier"]:
            out[name] = cmd[2]
    return out


def test_every_tier_has_a_worker_service() -> None:
    workers = _workers(_compose()["services"])
    assert sorted(workers.values()) == sorted(TIERS)


def test_references_resolve() -> None:
    compose = _compose()
    services = compose["services"]
    volumes = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for dep in svc.get("depends_on") or {}:
            assert dep in services, f"{name} depends on undefined service {dep}"
        for mount in svc.get("volumes") or []:
            source = mount.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in volumes, f"{name} mounts undeclared volume {source}"


def test_workers_run_the_image_and_report_health_on_their_metrics_port() -> None:
    services = _compose()["services"]
    for name in _workers(services):
        svc = services[name]
        assert svc["image"] == "scrapifie:local"
        assert "9310" in [str(p) for p in svc.get("expose", [])]
        assert "9310/metrics" in " ".join(svc["healthcheck"]["test"])


def test_prometheus_scrapes_every_worker_service() -> None:
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "worker")
    names = {n for sd in job["dns_sd_configs"] for n in sd["names"]}
    assert set(_workers(_compose()["services"])) <= names


def test_the_image_installs_the_chromium_the_browser_tiers_launch() -> None:
    # BrowserConfig launches Debian's headless shell by default; its package has the same name.
    assert HEADLESS_SHELL == "/usr/bin/chromium-headless-shell"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "chromium-headless-shell" in dockerfile


def _roles(services: dict[str, Any]) -> dict[str, Role]:
    """service name -> the pipeline role its command runs (services of the scrapifie image)."""
    out = {}
    for name, svc in services.items():
        cmd = svc.get("command") or []
        if svc.get("image") != "scrapifie:local" or not cmd:
            continue
        if cmd[:2] == ["worker", "--tier"]:
            out[name] = Role(f"worker-{cmd[2]}")
        elif cmd[0] in ("router", "sink", "gateway"):
            out[name] = Role(cmd[0])
    return out


def test_every_topic_a_service_produces_to_has_a_consuming_service() -> None:
    """From the topic table: a compose stack that runs a producer of a topic runs one of its
    consumers (a job to scrape.requests with no router never started, say)."""
    present = set(_roles(_compose()["services"]).values())
    assert Role.GATEWAY in present
    unread = [
        (spec.base, sorted(present & set(spec.producers)))
        for spec in SPECS
        if present & set(spec.producers)
        and set(spec.consumers) != {Role.OPERATOR}  # the DLQ is read by people
        and not present & set(spec.consumers)
    ]
    assert not unread, f"produced to but consumed by no service: {unread}"


def test_the_sinks_consume_what_the_topic_table_says() -> None:
    topics = TopicSet()
    handlers = [ResultsSink(topics, None, None), LedgerSink(topics, None)]  # type: ignore[arg-type]
    consumed = {t for h in handlers for t in h.topics()}
    declared = {topics.name(s.base) for s in SPECS if Role.SINK in s.consumers}
    assert consumed == declared


def test_prometheus_scrapes_every_process_that_serves_metrics() -> None:
    defaults = Settings.model_fields
    port = {
        Role.ROUTER: defaults["router_metrics_port"].default,
        Role.SINK: defaults["sink_metrics_port"].default,
        **dict.fromkeys(
            (Role.WORKER_HTTP, Role.WORKER_BROWSER, Role.WORKER_STEALTH),
            defaults["worker_metrics_port"].default,
        ),
        Role.GATEWAY: Settings().gateway.port,  # /metrics on the API port
    }
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    scraped: set[tuple[str, int]] = set()
    for job in prom["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            scraped |= {(n, int(sd["port"])) for n in sd["names"]}
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                host, _, p = target.partition(":")
                scraped.add((host, int(p)))
    services = _compose()["services"]
    missing = [(n, port[r]) for n, r in _roles(services).items() if (n, port[r]) not in scraped]
    assert not missing, f"not scraped by Prometheus: {missing}"
