"""Run the pinned Synapse as a subprocess on loopback, with or without the module.

Used by the e2e tests, the benchmark and `make run`. A `Homeserver` is always stopped by the
context manager that made it, also when the code inside raises.
"""

import hashlib
import hmac
import itertools
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import yaml
from signedjson.key import generate_signing_key, write_signing_keys

from tests.harness.client import MatrixClient
from tests.harness.federation import federate
from tests.harness.postgres import PostgresDatabase, fresh_database

MODULE = "synapse_compliance.ComplianceModule"
REGISTRATION_SECRET = "compliance-test-registration-secret"
SERVER_NAME = "localhost"
_unique = itertools.count()

_FAST = {"per_second": 10000, "burst_count": 10000}
RELAXED_RATE_LIMITS: dict[str, Any] = {
    "rc_message": _FAST,
    "rc_joins": {"local": _FAST},
    "rc_invites": {"per_room": _FAST, "per_user": _FAST},
    "rc_room_creation": _FAST,
    "rc_login": {"address": _FAST, "account": _FAST},
}


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@attrs.frozen
class DatabaseChoice:
    """SQLite (a file in the server's folder) or a PostgreSQL database made for this server."""

    kind: str  # "sqlite" | "postgresql"
    postgres: PostgresDatabase | None = None

    def synapse_config(self, workdir: Path) -> dict[str, Any]:
        """The `database:` block for homeserver.yaml."""
        if self.kind == "sqlite":
            return {"name": "sqlite3", "args": {"database": str(workdir / "homeserver.db")}}
        assert self.postgres is not None
        return {"name": "psycopg2", "args": {**self.postgres.connect_args(), "cp_min": 1, "cp_max": 10}}


def homeserver_config(
    workdir: Path,
    port: int,
    database: Mapping[str, Any],
    module_config: Any,
    *,
    extra: Mapping[str, Any] | None = None,
    relaxed_rate_limits: bool = True,
    metrics: bool = False,
) -> dict[str, Any]:
    """A loopback homeserver config; `module_config=None` means plain Synapse without the module.

    `relaxed_rate_limits` lifts Synapse's own limits, which tests and benchmarks would otherwise
    measure instead of the module; `make run` keeps Synapse's defaults.
    """
    config: dict[str, Any] = {
        "server_name": SERVER_NAME,
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "pid_file": str(workdir / "homeserver.pid"),
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [
                    {"names": ["client", "federation", *(["metrics"] if metrics else [])], "compress": False}
                ],
            }
        ],
        "database": dict(database),
        "log_config": str(workdir / "log.yaml"),
        "media_store_path": str(workdir / "media_store"),
        "signing_key_path": str(workdir / "signing.key"),
        "registration_shared_secret": REGISTRATION_SECRET,
        "macaroon_secret_key": secrets.token_hex(16),
        "form_secret": secrets.token_hex(16),
        "report_stats": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "enable_registration": False,
        "presence": {"enabled": False},
        "server_notices": {
            "system_mxid_localpart": "notices",
            "system_mxid_display_name": "Compliance Notices",
            "room_name": "Compliance Notices",
            "auto_join": True,
        },
        "modules": [] if module_config is None else [{"module": MODULE, "config": module_config}],
    }
    if metrics:
        config["enable_metrics"] = True  # served at /_synapse/metrics on the same listener
    if relaxed_rate_limits:
        config.update(RELAXED_RATE_LIMITS)
    if extra:
        config.update(extra)
    return config


def write_homeserver_files(workdir: Path, config: Mapping[str, Any]) -> Path:
    """Write homeserver.yaml, its log config and a signing key into `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "media_store").mkdir(exist_ok=True)
    key_path = workdir / "signing.key"
    if not key_path.exists():
        with key_path.open("w") as f:
            write_signing_keys(f, [generate_signing_key("a_test")])
    log_config = {
        "version": 1,
        "formatters": {
            "precise": {
                "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"
            }
        },
        "filters": {"context": {"()": "synapse.logging.context.LoggingContextFilter", "request": ""}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "precise",
                "filename": str(workdir / "homeserver.log"),
                "filters": ["context"],
            }
        },
        "loggers": {"synapse_compliance": {"level": "DEBUG"}},
        "root": {"level": "INFO", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }
    (workdir / "log.yaml").write_text(yaml.safe_dump(log_config))
    path = workdir / "homeserver.yaml"
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


@contextmanager
def database_for(kind: str, prefix: str = "compliance_test") -> Iterator[DatabaseChoice]:
    """A fresh database of `kind` ("sqlite" or "postgresql") for one server, dropped afterwards."""
    if kind == "sqlite":
        yield DatabaseChoice("sqlite")
        return
    with fresh_database(prefix) as pg:
        yield DatabaseChoice("postgresql", pg)


class StartupFailed(Exception):
    """Synapse exited before it became healthy."""

    def __init__(self, returncode: int | None, output: str) -> None:
        super().__init__(f"Synapse exited with {returncode}:\n{output[-4000:]}")
        self.returncode = returncode
        self.output = output


@attrs.define
class Homeserver:
    """A running Synapse: where it listens and how to make users on it."""

    base_url: str
    workdir: Path
    process: subprocess.Popen[bytes]
    server_name: str = SERVER_NAME

    def url(self, path: str) -> str:
        """An absolute URL on this server."""
        return self.base_url + path

    def log_text(self) -> str:
        """Synapse's log so far (for assertions and failure reports)."""
        path = self.workdir / "homeserver.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def register(
        self, localpart: str | None = None, *, admin: bool = False, password: str | None = None
    ) -> MatrixClient:
        """Register a user with the shared-secret admin API and return a client logged in as them."""
        localpart = localpart or f"u{os.getpid()}x{next(_unique)}x{secrets.token_hex(3)}"
        password = password or secrets.token_urlsafe(12)
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            nonce = http.get("/_synapse/admin/v1/register").json()["nonce"]
            message = "\x00".join([nonce, localpart, password, "admin" if admin else "notadmin"])
            mac = hmac.new(REGISTRATION_SECRET.encode(), message.encode(), digestmod=hashlib.sha1)
            r = http.post(
                "/_synapse/admin/v1/register",
                json={
                    "nonce": nonce,
                    "username": localpart,
                    "password": password,
                    "admin": admin,
                    "mac": mac.hexdigest(),
                },
            )
            r.raise_for_status()
            body = r.json()
        return MatrixClient(self.base_url, body["user_id"], body["access_token"], password=password)


def wait_healthy(base_url: str, process: subprocess.Popen[bytes], output: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StartupFailed(process.returncode, output.read_text(errors="replace"))
        try:
            if httpx.get(base_url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise StartupFailed(None, "timed out waiting for /health\n" + output.read_text(errors="replace"))


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """SIGTERM, then SIGKILL if Synapse does not exit in time."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def spawn_synapse(config_path: Path, output: Path) -> subprocess.Popen[bytes]:
    """Start `python -m synapse.app.homeserver -c config_path`, stdout+stderr into `output`."""
    with output.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver", "-c", str(config_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=config_path.parent,
        )


@contextmanager
def running_homeserver(
    workdir: Path,
    database: DatabaseChoice,
    module_config: Any,
    *,
    extra: Mapping[str, Any] | None = None,
    timeout_s: float = 90,
    federated: bool = False,
    metrics: bool = False,
) -> Iterator[Homeserver]:
    """Start Synapse, yield it once `/health` answers, and always stop it afterwards.

    With `federated=True` the server is named `127.0.0.1:<tls port>` and can federate with
    other federated test servers (tests/harness/federation.py).
    """
    port = free_loopback_port()
    config = homeserver_config(
        workdir, port, database.synapse_config(workdir), module_config, extra=extra, metrics=metrics
    )
    if federated:
        workdir.mkdir(parents=True, exist_ok=True)
        config = federate(config, workdir, free_loopback_port())
    config_path = write_homeserver_files(workdir, config)
    output = workdir / "stdout.log"
    process = spawn_synapse(config_path, output)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(base_url, process, output, timeout_s)
        yield Homeserver(
            base_url=base_url, workdir=workdir, process=process, server_name=config["server_name"]
        )
    finally:
        stop_process(process)


def start_expecting_failure(
    workdir: Path,
    database: DatabaseChoice,
    module_config: Any,
    timeout_s: float = 90,
    *,
    extra: Mapping[str, Any] | None = None,
) -> StartupFailed:
    """Start Synapse with a config that must be refused; return how it failed.

    `extra` adds homeserver.yaml keys, as for `running_homeserver` (e.g. `oidc_providers`).

    Raises:
        AssertionError: Synapse became healthy instead (it is stopped first).
    """
    try:
        with running_homeserver(workdir, database, module_config, extra=extra, timeout_s=timeout_s):
            pass
    except StartupFailed as e:
        return e
    raise AssertionError("Synapse started although its module config is invalid")
