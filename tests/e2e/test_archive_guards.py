"""Archive guards: short retention policies and encryption refused in groups, warnings about
Synapse settings that undercut the archive, and the archiver's lag in status and metrics."""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServerFactory, database
from tests.e2e.test_archive import ArchiveServer
from tests.harness.client import MatrixClient, q
from tests.harness.homeserver import running_homeserver

pytestmark = pytest.mark.e2e

DAY_MS = 86_400_000
MIN_MS = 184 * DAY_MS  # retention.min_days defaults to 184
REASON = "io.synapse_compliance.reason"
MEGOLM = {"algorithm": "m.megolm.v1.aes-sha2"}
RETENTION = "m.room.retention"
ENCRYPTION = "m.room.encryption"


@pytest.fixture(scope="module")
def guarded(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchiveServer]:
    """The default config (`encrypted_rooms: forbid`) with Synapse's default settings."""
    workdir = tmp_path_factory.mktemp(f"guards-{db_kind}")
    with database(db_kind) as db, running_homeserver(workdir, db, {}, metrics=True) as hs:
        yield ArchiveServer(hs, db)


# Every setting the start-up checks warn about, each on the wrong side of its threshold.
UNSAFE_SETTINGS: dict[str, Any] = {
    "redaction_retention_period": "1h",
    "retention": {
        "enabled": True,
        "default_policy": {"max_lifetime": "30d"},
        "allowed_lifetime_max": "100d",
    },
    "user_ips_max_age": "1h",
    "forgotten_room_retention_period": "1d",
}
UNSAFE_WARNINGS = {
    "redaction_retention_short": "redaction_retention_period",
    "retention_default_too_short": "retention.default_policy.max_lifetime",
    "retention_allowed_max_too_short": "retention.allowed_lifetime_max",
    "retention_purge_jobs": "retention.purge_jobs",
    "user_ips_max_age_short": "user_ips_max_age",
    "forgotten_room_purge": "forgotten_room_retention_period",
}


@pytest.fixture(scope="module")
def ciphertext(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchiveServer]:
    """`encrypted_rooms: archive_ciphertext`, on a Synapse with every unsafe setting above."""
    workdir = tmp_path_factory.mktemp(f"guards-lax-{db_kind}")
    config = {"retention": {"encrypted_rooms": "archive_ciphertext"}}
    with database(db_kind) as db, running_homeserver(workdir, db, config, extra=UNSAFE_SETTINGS) as hs:
        yield ArchiveServer(hs, db)


def refused(r: httpx.Response, reason: str) -> dict[str, Any]:
    assert r.status_code == 403, r.text
    body: dict[str, Any] = r.json()
    assert body["errcode"] == "M_FORBIDDEN"
    assert body[REASON] == reason
    return body


def state_or_none(user: MatrixClient, room_id: str, event_type: str) -> Any:
    r = user.state(room_id, event_type)
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return r.json()


def status(server: ArchiveServer) -> dict[str, Any]:
    r = server.admin.status()
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# --- m.room.retention -------------------------------------------------------------------------


def test_a_retention_policy_of_exactly_min_days_is_allowed_and_one_ms_less_is_refused(
    guarded: ArchiveServer,
) -> None:
    owner = guarded.member()
    room = owner.create_group()
    assert owner.put_state(room, RETENTION, {"max_lifetime": MIN_MS}).status_code == 200
    body = refused(owner.put_state(room, RETENTION, {"max_lifetime": MIN_MS - 1}), "retention_too_short")
    assert "at least 184 days" in body["error"] and str(MIN_MS) in body["error"]
    assert body["io.synapse_compliance.min_lifetime_ms"] == MIN_MS
    assert state_or_none(owner, room, RETENTION) == {"max_lifetime": MIN_MS}  # unchanged
    # No max_lifetime means "keep for ever".
    assert owner.put_state(room, RETENTION, {"min_lifetime": DAY_MS}).status_code == 200


def test_synapse_itself_refuses_a_non_integer_lifetime_on_a_state_put(guarded: ArchiveServer) -> None:
    owner = guarded.member()
    room = owner.create_group()
    r = owner.put_state(room, RETENTION, {"max_lifetime": "184d"})
    assert r.status_code == 400, r.text
    assert r.json()["errcode"] == "M_BAD_JSON"  # synapse/events/validator.py, before any callback
    assert state_or_none(owner, room, RETENTION) is None


def test_create_room_initial_state_is_checked(guarded: ArchiveServer) -> None:
    owner = guarded.member()

    def create(max_lifetime: object) -> httpx.Response:
        policy = {"type": RETENTION, "state_key": "", "content": {"max_lifetime": max_lifetime}}
        return owner.create_room(name="g", preset="private_chat", initial_state=[policy])

    rooms_before = owner.request("GET", "/_matrix/client/v3/joined_rooms").json()["joined_rooms"]
    refused(create(MIN_MS - 1), "retention_too_short")
    body = refused(create("184d"), "retention_too_short")  # refused before Synapse makes anything
    assert "whole number of milliseconds" in body["error"]
    refused(create(True), "retention_too_short")
    rooms_after = owner.request("GET", "/_matrix/client/v3/joined_rooms").json()["joined_rooms"]
    assert rooms_after == rooms_before  # no half-made room
    r = create(MIN_MS)
    assert r.status_code == 200, r.text
    assert state_or_none(owner, r.json()["room_id"], RETENTION) == {"max_lifetime": MIN_MS}


def test_admins_cannot_shorten_a_groups_log_either(guarded: ArchiveServer) -> None:
    room = guarded.admin.create_group()
    refused(guarded.admin.put_state(room, RETENTION, {"max_lifetime": DAY_MS}), "retention_too_short")
    refused(guarded.admin.put_state(room, ENCRYPTION, MEGOLM), "encryption_forbidden")
    policy = {"type": RETENTION, "content": {"max_lifetime": DAY_MS}}
    refused(guarded.admin.create_room(name="g", initial_state=[policy]), "retention_too_short")


# --- m.room.encryption ------------------------------------------------------------------------


def test_encryption_is_refused_in_a_group(guarded: ArchiveServer) -> None:
    owner = guarded.member()
    room = owner.create_group()
    body = refused(owner.put_state(room, ENCRYPTION, MEGOLM), "encryption_forbidden")
    assert "unreadable" in body["error"]
    assert state_or_none(owner, room, ENCRYPTION) is None
    initial = [{"type": ENCRYPTION, "state_key": "", "content": MEGOLM}]
    refused(owner.create_room(name="g", preset="private_chat", initial_state=initial), "encryption_forbidden")


def test_direct_chats_may_be_encrypted(guarded: ArchiveServer) -> None:
    alice, bob = guarded.hs.register(), guarded.hs.register()  # unverified: direct chats are not governed
    initial = [{"type": ENCRYPTION, "state_key": "", "content": MEGOLM}]
    r = alice.create_room(
        is_direct=True, invite=[bob.user_id], preset="trusted_private_chat", initial_state=initial
    )
    assert r.status_code == 200, r.text
    dm = r.json()["room_id"]
    assert state_or_none(alice, dm, ENCRYPTION) == MEGOLM
    other = alice.create_room(is_direct=True, invite=[bob.user_id]).json()["room_id"]
    assert alice.put_state(other, ENCRYPTION, MEGOLM).status_code == 200
    # A short retention policy in a direct chat is not the archive's business either.
    assert alice.put_state(other, RETENTION, {"max_lifetime": DAY_MS}).status_code == 200


def _direct_chat(
    server: ArchiveServer, initial: list[dict[str, Any]]
) -> tuple[MatrixClient, MatrixClient, str]:
    """A direct chat of two verified users (so only the guard can refuse), with `initial` state."""
    alice, bob = server.member(), server.member()
    r = alice.create_room(
        is_direct=True, invite=[bob.user_id], preset="trusted_private_chat", initial_state=initial
    )
    assert r.status_code == 200, r.text
    dm = r.json()["room_id"]
    assert bob.join(dm).status_code == 200
    return alice, bob, dm


def membership(user: MatrixClient, room_id: str, user_id: str) -> str | None:
    r = user.state(room_id, "m.room.member", user_id)
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return str(r.json()["membership"])


def test_an_encrypted_direct_chat_cannot_become_a_group(guarded: ArchiveServer) -> None:
    alice, bob, dm = _direct_chat(guarded, [{"type": ENCRYPTION, "state_key": "", "content": MEGOLM}])
    carol = guarded.member()
    body = refused(bob.invite(dm, carol.user_id), "encryption_forbidden")
    assert "would make this direct chat a group" in body["error"] and "Start a new group" in body["error"]
    assert membership(alice, dm, carol.user_id) is None  # nothing was sent
    # Still a direct chat: its two members go on as before.
    assert alice.send_text(dm, "just us two").status_code == 200
    assert bob.leave(dm).status_code == 200 and bob.join(dm).status_code != 200  # left; no invite
    assert alice.invite(dm, bob.user_id).status_code == 200  # back to two members is fine
    assert bob.join(dm).status_code == 200


def test_a_short_lived_direct_chat_cannot_become_a_group(guarded: ArchiveServer) -> None:
    short = [{"type": RETENTION, "state_key": "", "content": {"max_lifetime": DAY_MS}}]
    alice, _, dm = _direct_chat(guarded, short)
    carol = guarded.member()
    body = refused(alice.invite(dm, carol.user_id), "retention_too_short")
    assert "would make this direct chat a group" in body["error"] and "184 days" in body["error"]
    assert body["io.synapse_compliance.min_lifetime_ms"] == MIN_MS
    # A public direct chat: joining without an invite is the same growth.
    assert alice.put_state(dm, "m.room.join_rules", {"join_rule": "public"}).status_code == 200
    refused(carol.join(dm), "retention_too_short")
    assert membership(alice, dm, carol.user_id) is None
    # Once the policy is long enough, the third member may come, and the room is a group.
    assert alice.put_state(dm, RETENTION, {"max_lifetime": MIN_MS}).status_code == 200
    assert carol.join(dm).status_code == 200
    refused(alice.put_state(dm, RETENTION, {"max_lifetime": DAY_MS}), "retention_too_short")


def test_other_state_keys_are_not_policies(guarded: ArchiveServer) -> None:
    owner = guarded.member()
    room = owner.create_group()
    assert owner.put_state(room, RETENTION, {"max_lifetime": DAY_MS}, state_key="x").status_code == 200


# --- status and metrics ----------------------------------------------------------------------


def test_default_settings_raise_no_warning_and_status_shows_the_lag(guarded: ArchiveServer) -> None:
    owner = guarded.member()
    room = owner.create_group()
    assert owner.send_text(room, "hello").status_code == 200
    guarded.run()
    body = status(guarded)
    assert body["warnings"] == []
    archive = body["archive"]
    assert archive["encrypted_rooms"] == "forbid"
    # Just archived and nothing sent since: nothing is waiting.
    assert archive["lag_events"] == 0
    assert archive["lag_seconds"] == 0
    assert archive["lag_alert"] is False
    assert "compliance: redaction_retention_period" not in guarded.hs.log_text()


def test_the_lag_gauges_are_exported(guarded: ArchiveServer) -> None:
    guarded.run()
    status(guarded)  # sets the gauges on this process
    text = httpx.get(guarded.hs.url("/_synapse/metrics"), timeout=30).text
    assert 'synapse_compliance_archive_lag_events{server_name="localhost"} 0.0' in text
    assert 'synapse_compliance_archive_lag_seconds{server_name="localhost"} 0.0' in text


# --- archive_ciphertext and unsafe settings ---------------------------------------------------


def test_each_unsafe_setting_is_warned_about_at_start_up_and_in_status(ciphertext: ArchiveServer) -> None:
    warnings = status(ciphertext)["warnings"]
    assert {w["code"]: w["setting"] for w in warnings} == UNSAFE_WARNINGS
    log = ciphertext.hs.log_text()
    for w in warnings:
        assert w["message"]
        fragment = f"compliance: {w['setting']} ({w['code']}): "
        lines = [line for line in log.splitlines() if fragment in line]
        assert len(lines) == 1, fragment  # once, at start-up
        assert " - WARNING - " in lines[0]


def test_archive_ciphertext_lets_an_encrypted_direct_chat_grow_but_not_a_short_lived_one(
    ciphertext: ArchiveServer,
) -> None:
    _, bob, dm = _direct_chat(ciphertext, [{"type": ENCRYPTION, "state_key": "", "content": MEGOLM}])
    assert bob.invite(dm, ciphertext.member().user_id).status_code == 200
    short = [{"type": RETENTION, "state_key": "", "content": {"max_lifetime": DAY_MS}}]
    alice, _, dm = _direct_chat(ciphertext, short)
    refused(alice.invite(dm, ciphertext.member().user_id), "retention_too_short")


def test_archive_ciphertext_allows_encrypted_groups_and_archives_the_ciphertext(
    ciphertext: ArchiveServer,
) -> None:
    owner = ciphertext.member()
    initial = [{"type": ENCRYPTION, "state_key": "", "content": MEGOLM}]
    r = owner.create_room(name="sealed", preset="private_chat", initial_state=initial)
    assert r.status_code == 200, r.text
    room = r.json()["room_id"]
    other = owner.create_group()
    assert owner.put_state(other, ENCRYPTION, MEGOLM).status_code == 200
    ciphertext_content = {
        "algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": "AwgAEnACgAkLmt6qF84IK++J7UDH2Za1YVchHyprqTqsg",
        "device_id": "DEVICE",
        "sender_key": "IlRMeOPX2e0MurIyfWEucYBRVOEEUMrOHqn/8mLqMjA",
        "session_id": "X3lUlvLELLYxeTx4yOVu6UDpasGEVO0Jbu+QFnm0cKQ",
    }
    r = owner.request(
        "PUT", f"/_matrix/client/v3/rooms/{q(room)}/send/m.room.encrypted/enc1", json=ciphertext_content
    )
    assert r.status_code == 200, r.text
    event_id = r.json()["event_id"]
    ciphertext.run()
    rows = {row[0]: row for row in ciphertext.archived(room)}
    archived = json.loads(rows[event_id][2])
    assert archived["type"] == "m.room.encrypted"
    assert archived["content"] == ciphertext_content
    assert any(json.loads(row[2])["type"] == ENCRYPTION for row in rows.values())
    assert status(ciphertext)["archive"]["encrypted_rooms"] == "archive_ciphertext"
    # The retention guard does not depend on the encryption mode.
    refused(owner.put_state(room, RETENTION, {"max_lifetime": DAY_MS}), "retention_too_short")


# --- encryption by default ---------------------------------------------------------------------


def test_encryption_by_default_is_warned_about_and_refused_for_groups(server_factory: ServerFactory) -> None:
    hs = server_factory({}, extra={"encryption_enabled_by_default_for_room_type": "invite"})
    admin = hs.register(admin=True)
    r = admin.status()
    assert r.status_code == 200, r.text
    warnings = r.json()["warnings"]
    assert [w["code"] for w in warnings] == ["encryption_by_default"]
    assert warnings[0]["setting"] == "encryption_enabled_by_default_for_room_type"
    assert "private_chat, trusted_private_chat" in warnings[0]["message"]
    assert "(encryption_by_default)" in hs.log_text()
    owner = hs.register()
    assert admin.verify(owner.user_id).status_code == 200
    body = refused(owner.create_room(name="g", preset="private_chat"), "encryption_forbidden")
    assert "encryption_enabled_by_default_for_room_type" in body["error"]
    refused(owner.create_room(name="g"), "encryption_forbidden")  # private_chat is the default preset
    # Direct chats stay encrypted by default, as the server asks.
    friend = hs.register()
    r = owner.create_room(is_direct=True, invite=[friend.user_id], preset="trusted_private_chat")
    assert r.status_code == 200, r.text
    assert state_or_none(owner, r.json()["room_id"], ENCRYPTION) is not None


# --- the lag alert ----------------------------------------------------------------------------


def wait_for_schema(admin: MatrixClient) -> None:
    deadline = time.monotonic() + 60
    while not admin.status().json()["schema"]["ready"]:
        assert time.monotonic() < deadline, "the module's schema never became ready"
        time.sleep(0.1)


def test_a_lag_nearing_the_redaction_window_raises_the_alert(db_kind: str, tmp_path: Path) -> None:
    """No archiver runs on a server whose background tasks are elsewhere, so events wait.

    A first start applies the module's schema; the second runs the same database with
    `run_background_tasks_on` naming an instance that does not exist, and a 2 s redaction window:
    the first unarchived event's age passes half of it (1 s) while the test polls status.
    """
    with database(db_kind) as db:
        with running_homeserver(tmp_path, db, {}) as hs:
            wait_for_schema(hs.register(admin=True))
        extra = {"run_background_tasks_on": "elsewhere", "redaction_retention_period": "2s"}
        with running_homeserver(tmp_path, db, {}, extra=extra, metrics=True) as hs:
            admin = hs.register(admin=True)
            wait_for_schema(admin)  # read from the version table, polled every second here
            owner = hs.register()
            assert admin.verify(owner.user_id).status_code == 200
            room = owner.create_group()
            assert owner.send_text(room, "waiting for an archiver").status_code == 200
            deadline = time.monotonic() + 60
            archive: dict[str, Any] = {}
            while time.monotonic() < deadline:
                body = admin.status().json()
                archive = body["archive"]
                if archive["lag_alert"]:
                    break
                time.sleep(0.2)
            assert archive["lag_alert"] is True, archive
            assert archive["lag_events"] > 0
            assert archive["lag_seconds"] > 1
            codes = [w["code"] for w in body["warnings"]]
            assert codes == ["redaction_retention_short", "archive_lag_near_redaction_window"]
            assert "more than half of redaction_retention_period" in body["warnings"][1]["message"]
            log = hs.log_text()
            assert " - WARNING - " in next(line for line in log.splitlines() if "The archiver is" in line)
            text = httpx.get(hs.url("/_synapse/metrics"), timeout=30).text
            seconds = next(
                line
                for line in text.splitlines()
                if line.startswith("synapse_compliance_archive_lag_seconds{")
            )
            assert float(seconds.rsplit(" ", 1)[1]) > 1
