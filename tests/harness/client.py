"""A small client that speaks Matrix and the module's API the way a real client does: over HTTP."""

from typing import Any
from urllib.parse import quote

import httpx

COMPLIANCE = "/_synapse/client/compliance/v1"


def q(value: str) -> str:
    """Percent-encode one path segment (user ids contain `@` and `:`)."""
    return quote(value, safe="")


class MatrixClient:
    """One logged-in user."""

    def __init__(self, base_url: str, user_id: str, access_token: str | None, *, password: str = "") -> None:
        self.base_url = base_url
        self.user_id = user_id
        self.access_token = access_token
        self.password = password
        headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=60)
        self._txn = 0

    def with_token(self, token: str | None) -> "MatrixClient":
        """The same user id with another token (or none), for auth tests."""
        return MatrixClient(self.base_url, self.user_id, token)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A raw request; tests assert on status and body."""
        return self.http.request(method, path, **kwargs)

    # --- Matrix client-server API -------------------------------------------------------------

    def create_room(self, **body: Any) -> httpx.Response:
        """POST /createRoom with `body`."""
        return self.http.post("/_matrix/client/v3/createRoom", json=body)

    def create_group(self, name: str = "group") -> str:
        """Create a private group and return its room id (fails the test if refused)."""
        r = self.create_room(name=name, preset="private_chat")
        assert r.status_code == 200, r.text
        return str(r.json()["room_id"])

    def send_text(self, room_id: str, text: str) -> httpx.Response:
        """Send an m.text message."""
        self._txn += 1
        return self.http.put(
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/t{self._txn}",
            json={"msgtype": "m.text", "body": text},
        )

    def invite(self, room_id: str, user_id: str) -> httpx.Response:
        """Invite `user_id` to `room_id`."""
        return self.http.post(f"/_matrix/client/v3/rooms/{q(room_id)}/invite", json={"user_id": user_id})

    def join(self, room_id: str) -> httpx.Response:
        """Join `room_id`."""
        return self.http.post(f"/_matrix/client/v3/join/{q(room_id)}", json={})

    def leave(self, room_id: str) -> httpx.Response:
        """Leave `room_id`."""
        return self.http.post(f"/_matrix/client/v3/rooms/{q(room_id)}/leave", json={})

    def state(self, room_id: str, event_type: str, state_key: str = "") -> httpx.Response:
        """GET one state event's content."""
        return self.http.get(f"/_matrix/client/v3/rooms/{q(room_id)}/state/{event_type}/{q(state_key)}")

    def put_state(self, room_id: str, event_type: str, content: Any, state_key: str = "") -> httpx.Response:
        """PUT a state event."""
        return self.http.put(
            f"/_matrix/client/v3/rooms/{q(room_id)}/state/{event_type}/{q(state_key)}", json=content
        )

    def set_power_level(self, room_id: str, user_id: str, level: int) -> httpx.Response:
        """Change one user's power level (read-modify-write of m.room.power_levels)."""
        content = self.state(room_id, "m.room.power_levels").json()
        content.setdefault("users", {})[user_id] = level
        return self.put_state(room_id, "m.room.power_levels", content)

    def redact(self, room_id: str, event_id: str) -> httpx.Response:
        """Redact an event."""
        self._txn += 1
        return self.http.put(
            f"/_matrix/client/v3/rooms/{q(room_id)}/redact/{q(event_id)}/r{self._txn}", json={}
        )

    def upgrade(self, room_id: str, new_version: str = "11") -> httpx.Response:
        """Upgrade a room."""
        return self.http.post(
            f"/_matrix/client/v3/rooms/{q(room_id)}/upgrade", json={"new_version": new_version}
        )

    def server_notices(self, notices_user: str = "@notices:localhost") -> list[str]:
        """Bodies of the server notices this user can read, oldest first."""
        rooms = self.http.get("/_matrix/client/v3/joined_rooms").json()["joined_rooms"]
        bodies: list[str] = []
        for room_id in rooms:
            chunk = self.http.get(
                f"/_matrix/client/v3/rooms/{q(room_id)}/messages", params={"dir": "b", "limit": 50}
            ).json()["chunk"]
            bodies += [
                e["content"].get("body", "")
                for e in reversed(chunk)
                if e["type"] == "m.room.message" and e["sender"] == notices_user
            ]
        return bodies

    def whoami(self) -> httpx.Response:
        """GET /account/whoami."""
        return self.http.get("/_matrix/client/v3/account/whoami")

    # --- the module's API ---------------------------------------------------------------------

    def compliance(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request below /_synapse/client/compliance/v1/."""
        return self.http.request(method, f"{COMPLIANCE}/{path.lstrip('/')}", **kwargs)

    def me(self) -> httpx.Response:
        """GET me: the caller's own status."""
        return self.compliance("GET", "me")

    def admin_user(self, user_id: str) -> httpx.Response:
        """GET admin/users/{user_id}."""
        return self.compliance("GET", f"admin/users/{q(user_id)}")

    def set_verification(self, user_id: str, body: Any) -> httpx.Response:
        """PUT admin/users/{user_id}/verification with a raw body (dict, or anything for bad-input tests)."""
        if isinstance(body, (bytes, str)):
            return self.compliance("PUT", f"admin/users/{q(user_id)}/verification", content=body)
        return self.compliance("PUT", f"admin/users/{q(user_id)}/verification", json=body)

    def verify(self, user_id: str, level: int = 1, note: str = "checked passport") -> httpx.Response:
        """Mark `user_id` verified at `level`."""
        return self.set_verification(user_id, {"status": "verified", "level": level, "note": note})

    def verification_history(self, user_id: str, **params: Any) -> httpx.Response:
        """GET admin/users/{user_id}/verification/history."""
        return self.compliance("GET", f"admin/users/{q(user_id)}/verification/history", params=params)

    def audit(self, **params: Any) -> httpx.Response:
        """GET admin/audit with filters."""
        return self.compliance("GET", "admin/audit", params=params)

    def status(self) -> httpx.Response:
        """GET admin/status."""
        return self.compliance("GET", "admin/status")
