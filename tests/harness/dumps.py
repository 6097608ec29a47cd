"""The whole database of a test server as text, to prove what is (not) stored in it."""

import glob
import shutil
import sqlite3
import subprocess
from typing import Any

import psycopg2
import yaml

from tests.harness.homeserver import Homeserver


def _pg_dump_binary() -> str | None:
    candidates = ["/usr/bin/pg_dump", *sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"), reverse=True)]
    for path in candidates:
        if shutil.which(path):
            return path
    return None


def dump_database(hs: Homeserver) -> str:
    """Everything in `hs`'s database (schema and rows), as one string.

    SQLite: `iterdump()`. PostgreSQL: `pg_dump` when installed, else every text-like column of
    every table read with SELECT.
    """
    database = yaml.safe_load((hs.workdir / "homeserver.yaml").read_text())["database"]
    args: dict[str, Any] = {k: v for k, v in database["args"].items() if not k.startswith("cp_")}
    if database["name"] == "sqlite3":
        conn = sqlite3.connect(f"file:{args['database']}?mode=ro", uri=True)
        try:
            return "\n".join(conn.iterdump())
        finally:
            conn.close()
    binary = _pg_dump_binary()
    if binary is not None:
        command = [binary, "-h", args["host"], "-p", str(args["port"]), "-U", args["user"], args["dbname"]]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        if result.returncode == 0:
            return result.stdout
    return _select_everything(args)


def _select_everything(args: dict[str, Any]) -> str:
    conn = psycopg2.connect(**args)
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
            " AND data_type IN ('text', 'character varying', 'bytea', 'json', 'jsonb')"
        )
        parts = []
        for table, column in cur.fetchall():
            cur.execute(f'SELECT "{column}"::text FROM "{table}"')
            parts += [f"{table}.{column}: {row[0]}" for row in cur.fetchall()]
        return "\n".join(parts)
    finally:
        conn.close()
