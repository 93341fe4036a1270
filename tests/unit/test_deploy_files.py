"""docker-compose.yml, the Dockerfile and Prometheus agree with each other and with the code.

No Docker engine runs here (CI has none either), so this is the structural check: YAML that
parses, references that resolve, and a worker for every tier that can start in the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from streams.browser_pool import HEADLESS_SHELL

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
