"""Faust apps are configured by our settings only, never by Faust's own environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.kafka import KafkaConfig
from streams.runtime.faust_io import new_app

pytestmark = pytest.mark.unit


def test_faust_environment_variables_are_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BROKER_URL", "kafka://elsewhere:9092")
    monkeypatch.setenv("CONSUMER_GROUP_INSTANCE_ID", "stray")
    app = new_app("t", KafkaConfig(bootstrap="127.0.0.1:9999"), str(tmp_path))
    assert [str(u) for u in app.conf.broker] == ["kafka://127.0.0.1:9999"]
    assert app.conf.consumer_group_instance_id is None


def test_static_membership_and_session_timeout_come_from_our_settings(tmp_path: Path) -> None:
    app = new_app(
        "t",
        KafkaConfig(bootstrap="127.0.0.1:9999"),
        str(tmp_path),
        instance_id="pod-1",
        session_timeout_s=12.0,
    )
    assert app.conf.consumer_group_instance_id == "pod-1"
    assert app.conf.broker_session_timeout == 12.0
