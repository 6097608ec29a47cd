"""`synapse-compliance export`: the archive (or a filtered part) into a file, with its manifest.

The same export as `GET admin/archive/events` (storage/archive_export.py makes both bodies), read
straight from Synapse's database over the CLI's own connection, so Synapse may keep running. The
snapshot (chain heads and id bound) and the `archive.export.start` audit entry are one
transaction; then keyset pages, each its own short read; then `archive.export.finish` and the
manifest. The body goes to `FILE.partial`, renamed to `FILE` only once the manifest is written,
so a `FILE` is always a complete export. A progress line (rows, rows/s) goes to stderr when it is
a terminal, or with `--progress`.

No Synapse imports (the CLI must start fast and work without the homeserver running).
"""

import argparse
import getpass
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from synapse_compliance.storage.archive_export import (
    DEFAULT_REASON,
    FINISH_ACTION,
    FORMATS,
    START_ACTION,
    ExportFilters,
    ExportPlan,
    ExportState,
    FilterError,
    parse_filters,
    plan_export,
    read_page,
)
from synapse_compliance.storage.audit_store import AuditEntry, audit_statement
from synapse_compliance.storage.key_rotation import Database

_OPTIONS = {"room_id": "--room", "user_id": "--user", "from": "--from", "to": "--to"}
_PROGRESS_EVERY_S = 0.5


class ExportUsageError(Exception):
    """An option value is unusable (exit status 2); the message names the option."""


class ExportFailed(Exception):
    """The export could not be completed (exit status 1)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `export` subcommand's options."""
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="path to homeserver.yaml")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write the export")
    parser.add_argument("--room", metavar="ROOM_ID", help="only this room")
    parser.add_argument("--user", metavar="USER_ID", help="only events sent by this user")
    parser.add_argument("--from", dest="from_ts", metavar="MS", help="origin_server_ts at or after (ms)")
    parser.add_argument("--to", dest="to_ts", metavar="MS", help="origin_server_ts before (ms, exclusive)")
    parser.add_argument("--format", choices=FORMATS, default=FORMATS[0], help="jsonl (default) or csv")
    parser.add_argument("--reason", default=DEFAULT_REASON, help="recorded in the audit log")
    parser.add_argument("--progress", action="store_true", help="show progress even if stderr is no terminal")


def filters_from_args(args: argparse.Namespace) -> ExportFilters:
    """The filters the options ask for.

    Raises:
        ExportUsageError: naming the option at fault.
    """
    try:
        return parse_filters(args.room, args.user, args.from_ts, args.to_ts)
    except FilterError as e:
        raise ExportUsageError(f"{_OPTIONS.get(e.field, e.field)}: {e.message}") from None


def cli_actor() -> str:
    """Who runs the command, for the audit log: `cli:<operating-system user>`."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in the environment nor in the password database
        return f"cli:uid-{os.getuid()}"


class Progress:
    """A `rows, rows/s` line on stderr, redrawn in place on a terminal, at most twice a second."""

    def __init__(self, stream: TextIO, enabled: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._enabled = enabled
        self._clock = clock
        self._start = self._shown = clock()
        self._end = "\r" if stream.isatty() else "\n"

    def update(self, rows: int, final: bool = False) -> None:
        """Show `rows` exported so far (always when `final`)."""
        now = self._clock()
        if not self._enabled or (not final and now - self._shown < _PROGRESS_EVERY_S):
            return
        self._shown = now
        rate = rows / max(now - self._start, 1e-6)
        end = "\n" if final else self._end
        self._stream.write(f"exported {rows} rows, {rate:,.0f} rows/s{end}")
        self._stream.flush()


def _query(db: Database) -> Callable[[str, tuple[object, ...]], list[tuple[Any, ...]]]:
    def query(sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in db.execute(sql, params).fetchall()]

    return query


def _audit(
    db: Database, action: str, details: dict[str, object], *, plan: ExportPlan, actor: str, reason: str
) -> None:
    entry = AuditEntry(actor, action, plan.audit_target, reason, details)
    db.execute(*audit_statement(entry, int(time.time() * 1000)))


def _start(db: Database, filters: ExportFilters, fmt: str, actor: str, reason: str) -> ExportPlan:
    """Take the snapshot and write the start audit entry, in one transaction."""
    db.begin()
    try:
        if db.postgres:  # both reads of `plan_export` must see one snapshot
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        plan = plan_export(_query(db), filters, fmt)
        _audit(db, START_ACTION, plan.audit_details(), plan=plan, actor=actor, reason=reason)
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return plan


def export_archive(db: Database, args: argparse.Namespace, stderr: TextIO = sys.stderr) -> ExportState:
    """Run the export the options describe over `db`; return its final state.

    Raises:
        ExportUsageError: a bad option value (nothing was read or written).
        ExportFailed: the archive cannot be read or the file cannot be written.
    """
    filters = filters_from_args(args)
    output = Path(args.output)
    partial = output.with_name(output.name + ".partial")
    try:
        out = partial.open("wb")  # before the audit entry: an unwritable path changes nothing
    except OSError as e:
        raise ExportFailed(f"export: cannot write {partial}: {e.strerror or e}") from None
    try:
        with out:
            state = _run(db, args, filters, out, Progress(stderr, args.progress or stderr.isatty()))
        partial.replace(output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return state


def _run(
    db: Database, args: argparse.Namespace, filters: ExportFilters, out: BinaryIO, progress: "Progress"
) -> ExportState:
    actor = cli_actor()
    started = int(time.time() * 1000)
    try:
        plan = _start(db, filters, args.format, actor, args.reason)
    except Exception as e:  # the driver's errors, e.g. no archive tables: one line, no traceback
        raise ExportFailed(f"export: cannot read the archive: {str(e).strip()}") from None
    state = ExportState(plan, actor, started)
    query = _query(db)
    try:
        out.write(state.header())
        while (after := state.next_after()) is not None:
            out.write(state.add(read_page(query, plan, after)))
            if db.postgres:
                db.rollback()  # end the page's read transaction; the id bound keeps the snapshot
            progress.update(state.rows)
        db.begin()
        _audit(db, FINISH_ACTION, state.audit_details(), plan=plan, actor=actor, reason=args.reason)
        db.commit()
        out.write(state.manifest_bytes())
    except OSError as e:
        db.rollback()
        raise ExportFailed(f"export: cannot write {args.output}: {e.strerror or e}") from None
    except Exception as e:
        db.rollback()
        raise ExportFailed(f"export: failed after {state.rows} rows: {str(e).strip()}") from None
    progress.update(state.rows, final=True)
    return state
