"""`make run`: a localhost homeserver with the module, on SQLite, in the foreground.

The first run writes `.dev/` (git-ignored): homeserver.yaml, a signing key, a fresh PII key and
the admin's credentials. Later runs reuse them, so accounts and rooms survive restarts.
Stop with Ctrl-C.
"""

import json
import secrets
import signal
import sys
from pathlib import Path
from types import FrameType

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synapse_compliance.keys import write_pii_key  # noqa: E402 (after the path set-up)
from tests.harness.homeserver import (  # noqa: E402
    Homeserver,
    homeserver_config,
    spawn_synapse,
    stop_process,
    wait_healthy,
    write_homeserver_files,
)

DEV = ROOT / ".dev"
PORT = 8008
BASE_URL = f"http://127.0.0.1:{PORT}"
ADMIN_FILE = DEV / "admin.json"


def prepare() -> Path:
    """Write the config, keys and folders once; return the homeserver.yaml path."""
    config_path = DEV / "homeserver.yaml"
    if config_path.exists():
        return config_path
    DEV.mkdir(exist_ok=True)
    pii_key = DEV / "pii.key"
    if not pii_key.exists():
        write_pii_key(str(pii_key))
    module_config = {"identity": {"pii_key_file": str(pii_key)}}
    database = {"name": "sqlite3", "args": {"database": str(DEV / "homeserver.db")}}
    config = homeserver_config(DEV, PORT, database, module_config, relaxed_rate_limits=False)
    return write_homeserver_files(DEV, config)


def ensure_admin(hs: Homeserver) -> dict[str, str]:
    """Register the `admin` account on first run; return its credentials."""
    if ADMIN_FILE.exists():
        saved: dict[str, str] = json.loads(ADMIN_FILE.read_text())
        return saved
    password = secrets.token_urlsafe(12)
    client = hs.register("admin", admin=True, password=password)
    creds = {"user_id": client.user_id, "password": password, "access_token": client.access_token or ""}
    ADMIN_FILE.write_text(json.dumps(creds, indent=2))
    ADMIN_FILE.chmod(0o600)
    return creds


def fresh_token(user_id: str, password: str) -> str:
    """Log the admin in again (the saved token may have been logged out)."""
    r = httpx.post(
        f"{BASE_URL}/_matrix/client/v3/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user_id},
            "password": password,
        },
        timeout=30,
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


def banner(creds: dict[str, str], token: str) -> str:
    """What to do next, printed once the server is up."""
    api = f"{BASE_URL}/_synapse/client/compliance/v1"
    return f"""
  synapse-compliance dev homeserver is running at {BASE_URL}  (server name: localhost)

  Admin account:  {creds["user_id"]}   password: {creds["password"]}
  (saved in .dev/admin.json; the config, database and keys are in .dev/)

  Log in with a Matrix client (e.g. Element or Cinny): choose "custom homeserver", enter
  {BASE_URL}, then the user name "admin" and the password above.

  Try the identity gate:
    # make a user (registration is closed; admins create accounts)
    curl -X PUT -H 'Authorization: Bearer {token}' \\
         {BASE_URL}/_synapse/admin/v2/users/@alice:localhost -d '{{"password": "alice-password"}}'
    # log in as alice in a client and create a room: refused, identity_unverified
    # verify alice, then creating the room works
    curl -X PUT -H 'Authorization: Bearer {token}' \\
         {api}/admin/users/@alice:localhost/verification \\
         -d '{{"status": "verified", "level": 1, "note": "passport checked"}}'
    curl -H 'Authorization: Bearer {token}' {api}/admin/audit

  Ctrl-C stops the server.
"""


def main() -> int:
    """Run the dev homeserver until Ctrl-C."""
    config_path = prepare()
    output = DEV / "stdout.log"
    process = spawn_synapse(config_path, output)

    def forward(signum: int, frame: FrameType | None) -> None:
        # Only pass the signal on: waiting here, inside the main thread's `wait()`, would deadlock.
        if process.poll() is None:
            process.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    try:
        wait_healthy(BASE_URL, process, output, timeout_s=120)
        hs = Homeserver(base_url=BASE_URL, workdir=DEV, process=process)
        creds = ensure_admin(hs)
        print(banner(creds, fresh_token(creds["user_id"], creds["password"])), flush=True)
        print(f"  Synapse's log: {DEV / 'homeserver.log'}", flush=True)
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_process(process)


if __name__ == "__main__":
    sys.exit(main())
