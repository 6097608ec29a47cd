"""The `synapse-compliance` command.

    synapse-compliance check-config homeserver.yaml   validate the module's config offline
    synapse-compliance keygen --pii-key FILE          make a new AES-256 key file for personal data

Exit status: 0 success, 1 failure (e.g. an invalid config), 2 usage error; messages go to stderr
as one line each.
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from synapse_compliance.config import ConfigProblem, parse_config
from synapse_compliance.keys import load_settings, write_pii_key

MODULE_NAMES = {"synapse_compliance.ComplianceModule", "synapse_compliance.module.ComplianceModule"}


class UsageError(Exception):
    """The command was called wrongly (exit status 2)."""


def run_check_config(args: argparse.Namespace) -> int:
    """Validate every entry of this module in a homeserver config, exactly as Synapse would."""
    path = Path(args.homeserver_yaml)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        print(f"{path}: not valid YAML: {e}", file=sys.stderr)
        return 1
    modules = document.get("modules") if isinstance(document, dict) else None
    entries = [
        (index, item)
        for index, item in enumerate(modules if isinstance(modules, list) else [])
        if isinstance(item, dict) and item.get("module") in MODULE_NAMES
    ]
    if not entries:
        print(f"{path}: no `modules:` entry loads synapse_compliance.ComplianceModule", file=sys.stderr)
        return 1
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
        print(f"{path}: modules.<item {index}>: synapse_compliance config is valid{key}")
    return 1 if failed else 0


def run_keygen(args: argparse.Namespace) -> int:
    """Write a new random key file (mode 0600)."""
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per job."""
    parser = argparse.ArgumentParser(prog="synapse-compliance", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check-config", help="validate the module's config in homeserver.yaml")
    check.add_argument("homeserver_yaml", help="path to homeserver.yaml")
    check.set_defaults(run=run_check_config)

    keygen = sub.add_parser("keygen", help="generate a key file")
    keygen.add_argument(
        "--pii-key", required=True, metavar="FILE", help="where to write a new AES-256 key for personal data"
    )
    keygen.add_argument("--force", action="store_true", help="replace an existing file")
    keygen.set_defaults(run=run_keygen)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `synapse-compliance` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except UsageError as e:
        parser.error(str(e))  # exits with status 2
    return result


if __name__ == "__main__":
    sys.exit(main())
