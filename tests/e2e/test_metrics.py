"""Prometheus metrics on Synapse's metrics listener: refusals by reason, time per callback."""

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e


def _samples(base_url: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(base_url + "/_synapse/metrics", timeout=30).text
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_refusals_and_callback_time_are_exported(server_factory: Any) -> None:
    hs = server_factory({}, metrics=True)
    admin, alice = hs.register(admin=True), hs.register()
    for _ in range(3):
        assert alice.create_room(name="no").status_code == 403
    assert admin.verify(alice.user_id).status_code == 200
    room_id = alice.create_group()
    for i in range(5):
        assert alice.send_text(room_id, f"m{i}").status_code == 200

    refusals = _samples(hs.base_url, "synapse_compliance_refusals_total")
    assert refusals[(("reason", "identity_unverified"), ("server_name", "localhost"))] == 3
    calls = _samples(hs.base_url, "synapse_compliance_callback_seconds_count")
    key = (("callback", "identity.check_event_for_spam"), ("server_name", "localhost"))
    assert calls[key] >= 5
    assert calls[(("callback", "identity.user_may_create_room"), ("server_name", "localhost"))] == 4
