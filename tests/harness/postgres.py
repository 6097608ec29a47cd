"""Fresh PostgreSQL databases for test servers, created as Synapse requires and dropped after.

The server comes from `COMPLIANCE_TEST_PG` (default `postgresql://postgres@127.0.0.1:5432/postgres`);
each database is `UTF8` with `C` collation from `template0` (SYNAPSE_FACTS §15).
"""

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlparse

import attrs
import psycopg2

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_dsn() -> str:
    """The DSN of the maintenance database used to create and drop test databases."""
    return os.environ.get("COMPLIANCE_TEST_PG", DEFAULT_DSN)


def unavailable_reason() -> str | None:
    """Why PostgreSQL cannot be used (None when it can)."""
    try:
        psycopg2.connect(admin_dsn(), connect_timeout=3).close()
    except psycopg2.Error as e:
        return f"PostgreSQL at {admin_dsn()} is not reachable: {str(e).strip()}"
    return None


@attrs.frozen
class PostgresDatabase:
    """A database on the test server."""

    host: str
    port: int
    user: str
    password: str | None
    dbname: str

    def connect_args(self) -> dict[str, Any]:
        """psycopg2 connect arguments (also Synapse's `database.args`)."""
        args: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.dbname,
        }
        if self.password:
            args["password"] = self.password
        return args

    def connect(self) -> Any:
        """A psycopg2 connection to this database."""
        return psycopg2.connect(**self.connect_args())


def _admin_connection() -> Any:
    conn = psycopg2.connect(admin_dsn())
    conn.autocommit = True
    return conn


@contextmanager
def fresh_database(prefix: str = "compliance_test") -> Iterator[PostgresDatabase]:
    """Create an empty database, yield it, and drop it afterwards (even if the body raised)."""
    url = urlparse(admin_dsn())
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    db = PostgresDatabase(
        host=url.hostname or "127.0.0.1",
        port=url.port or 5432,
        user=unquote(url.username or "postgres"),
        password=unquote(url.password) if url.password else None,
        dbname=name,
    )
    conn = _admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' TEMPLATE template0"
            )
        try:
            yield db
        finally:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        conn.close()
