"""Direct (test-only) access to a running test server's database, behind Synapse's back."""

import sqlite3
from typing import Any

import psycopg2
import yaml

from tests.harness.homeserver import DatabaseChoice, Homeserver


def server_sql(hs: Homeserver, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement (`?` placeholders) on `hs`'s database, commit, and return its rows."""
    db = yaml.safe_load((hs.workdir / "homeserver.yaml").read_text())["database"]
    params = {k: v for k, v in db["args"].items() if not k.startswith("cp_")}
    if db["name"] == "sqlite3":
        conn: Any = sqlite3.connect(params["database"], timeout=30)
    else:
        conn = psycopg2.connect(**params)
        statement = statement.replace("?", "%s")
    try:
        cur = conn.cursor()
        cur.execute(statement, args)
        rows = cur.fetchall() if cur.description else []
        conn.commit()
        return [tuple(r) for r in rows]
    finally:
        conn.close()


class ServerWithDatabase:
    """A running server, an admin on it, and direct (test-only) access to its database."""

    def __init__(self, hs: Homeserver, db: DatabaseChoice) -> None:
        self.hs = hs
        self.db = db
        self.admin = hs.register(admin=True)

    def sql(self, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the server's database (`?` placeholders); return its rows."""
        return server_sql(self.hs, query, args)
