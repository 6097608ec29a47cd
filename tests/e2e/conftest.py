"""Fixtures that start the pinned Synapse with the module, on SQLite and on PostgreSQL.

`homeserver` is one server per database for the whole session, with the module's default
(empty) config; tests register their own users. `server_factory` starts servers with other
configs, stopped at the end of the test. PostgreSQL cases skip with the reason when no server is
reachable, unless `REQUIRE_PG=1`, which turns that into a failure.
"""

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.harness.client import MatrixClient
from tests.harness.homeserver import DatabaseChoice, Homeserver, database_for, running_homeserver
from tests.harness.postgres import unavailable_reason

DATABASES = ["sqlite", "postgresql"]


def _require_postgres() -> None:
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("REQUIRE_PG") == "1":
        pytest.fail(f"REQUIRE_PG=1 but {reason}")
    pytest.skip(reason)


@contextmanager
def database(kind: str) -> Iterator[DatabaseChoice]:
    """A fresh database of `kind` for one server (PostgreSQL: skip or fail if unreachable)."""
    if kind == "postgresql":
        _require_postgres()
    with database_for(kind) as db:
        yield db


@contextmanager
def server(kind: str, workdir: Path, module_config: Any, **kwargs: Any) -> Iterator[Homeserver]:
    """A running Synapse with `module_config` on a fresh database of `kind`."""
    with database(kind) as db, running_homeserver(workdir, db, module_config, **kwargs) as hs:
        yield hs


@pytest.fixture(scope="session", params=DATABASES)
def db_kind(request: pytest.FixtureRequest) -> str:
    """The database the current test's servers use."""
    return str(request.param)


@pytest.fixture(scope="session")
def homeserver(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homeserver]:
    """The shared server: the module with an empty config (all defaults)."""
    with server(db_kind, tmp_path_factory.mktemp(f"hs-{db_kind}"), {}) as hs:
        yield hs


@pytest.fixture(scope="session")
def admin(homeserver: Homeserver) -> MatrixClient:
    """A server admin on the shared server."""
    return homeserver.register(admin=True)


ServerFactory = Callable[..., Homeserver]


@pytest.fixture
def server_factory(db_kind: str, tmp_path: Path) -> Iterator[ServerFactory]:
    """Start extra servers with their own module config; all stopped when the test ends."""
    with ExitStack() as stack:
        count = 0

        def start(module_config: Any, **kwargs: Any) -> Homeserver:
            nonlocal count
            count += 1
            return stack.enter_context(server(db_kind, tmp_path / f"hs{count}", module_config, **kwargs))

        yield start
