"""The `synapse-compliance` command.

    synapse-compliance check-config homeserver.yaml   validate the module's config offline
    synapse-compliance keygen --pii-key FILE          make a new AES-256 key file for personal data
    synapse-compliance keygen --signing-key FILE      make a new Ed25519 key for archive checkpoints
    synapse-compliance rotate-key -c homeserver.yaml  re-seal personal data under the current key
    synapse-compliance verify -c homeserver.yaml      recompute the archive's hash chains (read-only)
    synapse-compliance recount -c homeserver.yaml     rebuild the groups-created counts from Synapse's data
    synapse-compliance export -c homeserver.yaml -o FILE   the archive (filtered) with its manifest

Exit status: 0 success, 1 failure (e.g. an invalid config), 2 usage error; messages go to stderr
as one line each.
"""

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from signedjson.key import encode_verify_key_base64, get_verify_key
from signedjson.types import SigningKey

from synapse_compliance import cli_export
from synapse_compliance.config import ConfigProblem, parse_config
from synapse_compliance.core.checkpoints import CheckpointReport, key_id, verify_keys_for
from synapse_compliance.crypto import keyring_for
from synapse_compliance.keys import (
    load_settings,
    read_checkpoint_keys,
    write_checkpoint_key,
    write_pii_key,
)
from synapse_compliance.storage.archive_rows import verify_offline
from synapse_compliance.storage.checkpoint_store import verify_checkpoints_query
from synapse_compliance.storage.credit_recount import recount_database, settings_from_homeserver_yaml
from synapse_compliance.storage.key_rotation import (
    Database,
    RotationError,
    main_database_config,
    open_database,
    rotate_all,
)

_VERIFY_PROGRESS_ROWS = 10_000  # print progress every this many rows
MODULE_NAMES = {"synapse_compliance.ComplianceModule", "synapse_compliance.module.ComplianceModule"}


class UsageError(Exception):
    """The command was called wrongly (exit status 2)."""


class Failure(Exception):
    """The command failed (exit status 1); the message is printed to stderr."""


def read_homeserver_yaml(path: Path) -> tuple[dict[str, Any], list[tuple[int, dict[str, Any]]]]:
    """The homeserver config and its `modules:` entries that load this module, with their index.

    Raises:
        UsageError: the file cannot be read.
        Failure: it is not YAML, or no entry loads the module.
    """
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise Failure(f"{path}: not valid YAML: {e}") from None
    modules = document.get("modules") if isinstance(document, dict) else None
    entries = [
        (index, item)
        for index, item in enumerate(modules if isinstance(modules, list) else [])
        if isinstance(item, dict) and item.get("module") in MODULE_NAMES
    ]
    if not entries:
        raise Failure(f"{path}: no `modules:` entry loads synapse_compliance.ComplianceModule")
    assert isinstance(document, dict)  # entries were found in it
    return document, entries


def run_check_config(args: argparse.Namespace) -> int:
    """Validate every entry of this module in a homeserver config, exactly as Synapse would."""
    path = Path(args.homeserver_yaml)
    _, entries = read_homeserver_yaml(path)
    failed = False
    for index, item in entries:
        try:
            settings = load_settings(parse_config(item.get("config")))
        except ConfigProblem as e:
            where = e.dotted(f"modules.<item {index}>.config")
            print(f"{path}: error in configuration at '{where}': {e.message}", file=sys.stderr)
            failed = True
            continue
        key = f", PII key {settings.pii_key.key_id}" if settings.pii_key else ""
        if settings.previous_pii_keys:
            key += f" (previous: {', '.join(k.key_id for k in settings.previous_pii_keys)})"
        print(f"{path}: modules.<item {index}>: synapse_compliance config is valid{key}")
    return 1 if failed else 0


def run_rotate_key(args: argparse.Namespace) -> int:
    """Re-seal every identity record not sealed with the current PII key, in batches."""
    path = Path(args.config)
    document, entries = read_homeserver_yaml(path)
    index, item = entries[0]
    try:
        settings = load_settings(parse_config(item.get("config")))
    except ConfigProblem as e:
        where = e.dotted(f"modules.<item {index}>.config")
        raise Failure(f"{path}: error in configuration at '{where}': {e.message}") from None
    keyring = keyring_for(settings)
    if keyring is None:
        raise Failure(
            f"{path}: modules.<item {index}>.config.identity.pii_key_file is not set: "
            "there is no key to rotate to"
        )
    db = _connect(path, document)
    try:
        rotated = rotate_all(
            db,
            keyring,
            args.batch_size,
            clock_ms=lambda: int(time.time() * 1000),
            progress=lambda done, total: print(f"rotated {done}/{total} records", flush=True),
        )
    except RotationError as e:
        raise Failure(f"rotate-key: {e}") from None
    finally:
        db.close()
    current = keyring.current.key_id
    if rotated == 0:
        print(f"nothing to rotate: every identity record is sealed with PII key {current}")
    else:
        print(
            f"done: {rotated} records re-sealed with PII key {current}; the key files in "
            "identity.previous_pii_key_files are no longer needed by these records"
        )
    return 0


def _connect(path: Path, document: Any) -> Database:
    """A connection to the database homeserver.yaml names, or a one-line `Failure`."""
    try:
        return open_database(main_database_config(document))
    except RotationError as e:
        raise Failure(f"{path}: {e}") from None
    except Exception as e:  # the driver's connection errors; one line, no traceback
        raise Failure(f"{path}: cannot connect to the database: {str(e).strip()}") from None


def run_verify(args: argparse.Namespace) -> int:
    """Recompute the archive's hash chains from the database (read-only); report the first break."""
    path = Path(args.config)
    document, entries = read_homeserver_yaml(path)
    keys = _checkpoint_keys(path, entries[0])
    db = _connect(path, document)

    def query(sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in db.execute(sql, params).fetchall()]

    shown = 0

    def progress(rooms: int, rows: int) -> None:
        nonlocal shown
        if rows - shown >= _VERIFY_PROGRESS_ROWS:
            shown = rows
            print(f"checked {rows} rows in {rooms} rooms", flush=True)

    try:
        report = verify_offline(query, args.room_id, progress)
        checked = None
        if keys and report.first_break is None:
            checked = verify_checkpoints_query(query, verify_keys_for(keys), args.checkpoints, args.room_id)
    except Exception as e:  # e.g. no archive tables yet: the module never ran on this database
        raise Failure(f"verify: cannot read the archive: {str(e).strip()}") from None
    finally:
        db.close()
    found = report.first_break
    if found is not None:
        where = (
            f"event {found.event_id} (stream ordering {found.stream_ordering})"
            if found.event_id
            else "its end"
        )
        raise Failure(
            f"verify: chain of room {found.room_id} broken at {where}: {found.reason} "
            f"(after {report.rows_checked} good rows in {report.rooms_checked} rooms)"
        )
    print(f"ok: {report.rows_checked} rows in {report.rooms_checked} rooms; every chain holds")
    if checked is not None:
        _print_checkpoints(checked)
    return 0


def _checkpoint_keys(path: Path, entry: tuple[int, dict[str, Any]]) -> tuple[SigningKey, ...]:
    """The checkpoint keys `archive.signing_key_file` names (none when checkpoints are off)."""
    index, item = entry
    try:
        config = parse_config(item.get("config"))
        if config.archive.signing_key_file is None:
            return ()
        return read_checkpoint_keys(config.archive.signing_key_file, ("archive", "signing_key_file"))
    except ConfigProblem as e:
        where = e.dotted(f"modules.<item {index}>.config")
        raise Failure(f"{path}: error in configuration at '{where}': {e.message}") from None


def _print_checkpoints(checked: CheckpointReport) -> None:
    """One line: the checkpoints held, or a `Failure` naming the first that does not."""
    found = checked.first_mismatch
    if found is not None:
        room = f" room {found.room_id}:" if found.room_id else ""
        raise Failure(f"verify: checkpoint {found.seq} does not hold:{room} {found.reason} ({found.detail})")
    if checked.latest_seq is None:
        print("checkpoints: none made yet")
        return
    print(
        f"checkpoints: the latest {checked.checked} (up to {checked.latest_seq}) hold: signatures, "
        f"links and {checked.rooms_checked} room heads ({checked.rooms_pruned} pruned past)"
    )


def run_export(args: argparse.Namespace) -> int:
    """Write the archive (or the part the filters select) to a file, ending with its manifest."""
    try:
        cli_export.filters_from_args(args)  # usage errors before the database is opened
    except cli_export.ExportUsageError as e:
        raise UsageError(str(e)) from None
    path = Path(args.config)
    document, _ = read_homeserver_yaml(path)
    db = _connect(path, document)
    try:
        state = cli_export.export_archive(db, args)
    except cli_export.ExportFailed as e:
        raise Failure(str(e)) from None
    finally:
        db.close()
    print(f"exported {state.rows} rows to {args.output} (sha256 {state.manifest()['sha256']})")
    return 0


RECOUNT_ACTOR = "synapse-compliance recount"
_RECOUNT_PROGRESS_ROOMS = 5_000  # print progress every this many rooms


def run_recount(args: argparse.Namespace) -> int:
    """Rebuild `compliance_credit_groups` from Synapse's rooms and memberships (audited)."""
    path = Path(args.config)
    document, entries = read_homeserver_yaml(path)
    index, item = entries[0]
    try:
        config = parse_config(item.get("config"))
        settings = settings_from_homeserver_yaml(document, config.scope.direct_chats)
    except ConfigProblem as e:
        where = e.dotted(f"modules.<item {index}>.config")
        raise Failure(f"{path}: error in configuration at '{where}': {e.message}") from None
    except ValueError as e:
        raise Failure(f"{path}: {e}") from None
    db = _connect(path, document)
    shown = 0

    def progress(rooms: int) -> None:
        nonlocal shown
        if rooms - shown >= _RECOUNT_PROGRESS_ROOMS:
            shown = rooms
            print(f"scanned {rooms} rooms", flush=True)

    try:
        r = recount_database(
            db,
            settings,
            actor=RECOUNT_ACTOR,
            reason=args.reason,
            now_ms=int(time.time() * 1000),
            progress=progress,
        )
    except Exception as e:  # e.g. no module tables yet: the module never ran on this database
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Failure(f"recount: {first_line}") from None
    finally:
        db.close()
    print(
        f"done: {r.rooms_scanned} rooms scanned, {r.local_rooms} created by local users, {r.groups} groups, "
        f"{r.counting} counting; rows added {r.added}, ended {r.ended}, restored {r.restored}, "
        f"reassigned {r.reassigned}"
    )
    return 0


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def run_keygen(args: argparse.Namespace) -> int:
    """Write a new random key file (mode 0600)."""
    if args.signing_key is not None:
        return _keygen_signing(args.signing_key, force=args.force)
    try:
        key = write_pii_key(args.pii_key, force=args.force)
    except FileExistsError:
        print(
            f"{args.pii_key} exists; pass --force to replace it (records sealed with the old key "
            "then need `rotate-key`)",
            file=sys.stderr,
        )
        return 1
    except OSError as e:
        print(f"cannot write {args.pii_key}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"wrote PII key {key.key_id} to {args.pii_key}")
    return 0


def _keygen_signing(file_name: str, *, force: bool) -> int:
    try:
        key = write_checkpoint_key(file_name, force=force)
    except FileExistsError:
        print(
            f"{file_name} exists; pass --force to replace it (checkpoints signed with the old key "
            "then verify only while it stays in the file)",
            file=sys.stderr,
        )
        return 1
    except OSError as e:
        print(f"cannot write {file_name}: {e.strerror}", file=sys.stderr)
        return 1
    public = encode_verify_key_base64(get_verify_key(key))
    print(f"wrote checkpoint signing key {key_id(key)} to {file_name}; public key: {public}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per job."""
    parser = argparse.ArgumentParser(prog="synapse-compliance", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check-config", help="validate the module's config in homeserver.yaml")
    check.add_argument("homeserver_yaml", help="path to homeserver.yaml")
    check.set_defaults(run=run_check_config)

    keygen = sub.add_parser("keygen", help="generate a key file")
    which = keygen.add_mutually_exclusive_group(required=True)
    which.add_argument("--pii-key", metavar="FILE", help="where to write a new AES-256 key for personal data")
    which.add_argument(
        "--signing-key", metavar="FILE", help="where to write a new Ed25519 key for archive checkpoints"
    )
    keygen.add_argument("--force", action="store_true", help="replace an existing file")
    keygen.set_defaults(run=run_keygen)

    rotate = sub.add_parser(
        "rotate-key", help="re-seal personal data sealed with previous PII keys under the current one"
    )
    rotate.add_argument("-c", "--config", required=True, metavar="FILE", help="path to homeserver.yaml")
    rotate.add_argument(
        "--batch-size", type=_positive_int, default=500, metavar="N", help="records per transaction (500)"
    )
    rotate.set_defaults(run=run_rotate_key)

    verify = sub.add_parser("verify", help="recompute the archive's hash chains and report the first break")
    verify.add_argument("-c", "--config", required=True, metavar="FILE", help="path to homeserver.yaml")
    verify.add_argument("--room-id", metavar="ROOM", help="check only this room")
    verify.add_argument(
        "--checkpoints",
        type=_positive_int,
        default=1,
        metavar="N",
        help="check the latest N signed checkpoints (1)",
    )
    verify.set_defaults(run=run_verify)

    recount = sub.add_parser("recount", help="rebuild the groups-created counts from Synapse's own data")
    recount.add_argument("-c", "--config", required=True, metavar="FILE", help="path to homeserver.yaml")
    recount.add_argument("--reason", default="synapse-compliance recount", help="recorded in the audit log")
    recount.set_defaults(run=run_recount)

    export = sub.add_parser("export", help="write the archive to a file (jsonl or csv) with its manifest")
    cli_export.add_arguments(export)
    export.set_defaults(run=run_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `synapse-compliance` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except UsageError as e:
        parser.error(str(e))  # exits with status 2
    except Failure as e:
        print(str(e), file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
