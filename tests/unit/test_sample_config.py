"""The sample config parses, and documents every option the parser knows."""

import re
from pathlib import Path

import attrs
import yaml

from synapse_compliance.config import ComplianceConfig, parse_config

SAMPLE = Path(__file__).resolve().parents[2] / "config" / "compliance.sample.yaml"


def _option_paths(cls: type, prefix: str = "") -> list[str]:
    paths = []
    for field in attrs.fields(cls):
        if attrs.has(field.type):  # type: ignore[arg-type]  # attrs field types are classes here
            paths += _option_paths(field.type, f"{prefix}{field.name}.")  # type: ignore[arg-type]
        else:
            paths.append(prefix + field.name)
    return paths


def test_sample_parses_to_the_defaults() -> None:
    document = yaml.safe_load(SAMPLE.read_text())
    assert parse_config(document["modules"][0]["config"]) == ComplianceConfig()


def test_sample_documents_every_option() -> None:
    text = SAMPLE.read_text()
    for path in _option_paths(ComplianceConfig):
        leaf = path.rsplit(".", 1)[-1].removesuffix("_ms")  # durations are parsed into milliseconds
        assert re.search(rf"^\s*#?\s*{leaf}:", text, re.MULTILINE), f"{path} is not in the sample config"
