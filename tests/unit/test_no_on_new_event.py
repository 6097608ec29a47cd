"""The module must not register `on_new_event` (tasks/room_watch.py says why: with any such
callback Synapse loads the room's full state for every event, ~9 % of send throughput)."""

import ast
from pathlib import Path

import synapse_compliance

PACKAGE = Path(synapse_compliance.__file__).parent


def _registering_lines(source: str) -> list[int]:
    """Lines of calls that pass an `on_new_event=` keyword."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and any(k.arg == "on_new_event" for k in node.keywords)
    ]


def test_no_module_file_registers_on_new_event() -> None:
    found = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line in _registering_lines(path.read_text(encoding="utf-8"))
    ]
    assert found == []


def test_the_scan_finds_a_registration() -> None:
    source = "x = 1\napi.register_third_party_rules_callbacks(on_new_event=handler)\n"
    assert _registering_lines(source) == [2]
