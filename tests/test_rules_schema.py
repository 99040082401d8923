"""The committed JSON Schemas for rule files agree with the loader."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from service.rules import schema
from service.rules.loader import RuleSetError, load_rule_set

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
SCHEMAS = RULES / "schema"
REGENERATE = "regenerate them with `delight rules schema` and commit the result"


def _json_ready(value: Any) -> Any:
    """YAML reads dates as dates; in JSON they are strings."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return value


def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / name).read_text()))


def _schema_for(path: Path) -> str:
    return {"catalog.yaml": "catalog.schema.json", "settings.yaml": "settings.schema.json"}.get(
        path.name, "campaign.schema.json"
    )


def test_committed_schemas_are_what_the_loader_types_generate() -> None:
    for name, generated in schema.file_schemas().items():
        committed = (SCHEMAS / name).read_text()
        assert committed == schema.render(generated), f"rules/schema/{name} is stale; {REGENERATE}"


@pytest.mark.parametrize("path", sorted(RULES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_demo_file_names_its_schema_and_validates_against_it(path: Path) -> None:
    text = path.read_text()
    assert text.startswith(f"# yaml-language-server: $schema=schema/{_schema_for(path)}\n")
    errors = list(_validator(_schema_for(path)).iter_errors(_json_ready(yaml.safe_load(text))))
    assert errors == []


CAMPAIGNS = {
    "valid": (
        True,
        """
        campaign: ok
        holdout: 0.1
        budget: {awards: 10, cost: 5.5, daily_awards: 2}
        limit: {per_customer: 2, every: 30d}
        active: {from: 2026-01-01}
        rules:
          - id: a
            when: type == "purchase"
            chance: 0.5
            priority: 3
            limit: {per_customer: 1, every: 12h}
            award: {offer: {percent: 10, category: lamps, valid_days: 5, cost: 1.5}}
        """,
    ),
    "unknown key": (False, "campaign: x\nrules: [{id: a, when: 'true', award: {points: 1}}]\ncolour: red\n"),
    "missing rules": (False, "campaign: x\n"),
    "empty rules": (False, "campaign: x\nrules: []\n"),
    "bad id": (False, "campaign: Bad Id\nrules: [{id: a, when: 'true', award: {points: 1}}]\n"),
    "chance above 1": (False, "campaign: x\nrules: [{id: a, when: 'true', chance: 1.5, award: {points: 1}}]\n"),
    "holdout of 1": (False, "campaign: x\nholdout: 1\nrules: [{id: a, when: 'true', award: {points: 1}}]\n"),
    "bad duration": (
        False,
        "campaign: x\nrules: [{id: a, when: 'true', award: {points: 1}, limit: {per_customer: 1, every: 90 days}}]\n",
    ),
    "points not a number": (False, "campaign: x\nrules: [{id: a, when: 'true', award: {points: many}}]\n"),
    "unknown award key": (False, "campaign: x\nrules: [{id: a, when: 'true', award: {voucher: 1}}]\n"),
    "negative budget": (
        False,
        "campaign: x\nbudget: {awards: -1}\nrules: [{id: a, when: 'true', award: {points: 1}}]\n",
    ),
}


@pytest.mark.parametrize("case", sorted(CAMPAIGNS))
def test_schema_and_loader_accept_and_refuse_the_same_campaign_files(case: str, tmp_path: Path) -> None:
    valid, text = CAMPAIGNS[case]
    text = textwrap.dedent(text)
    (tmp_path / "c.yaml").write_text(text)
    schema_ok = not list(_validator("campaign.schema.json").iter_errors(_json_ready(yaml.safe_load(text))))
    try:
        load_rule_set(tmp_path)
        loader_ok = True
    except RuleSetError:
        loader_ok = False
    assert (schema_ok, loader_ok) == (valid, valid)


@pytest.mark.parametrize(
    ("name", "text", "valid"),
    [
        ("catalog.yaml", "gifts: [{id: mug, name: Mug, unit_cost: 3.1, stock: 5}]\n", True),
        ("catalog.yaml", "gifts: [{id: mug, name: Mug, stock: -1}]\n", False),
        ("catalog.yaml", "gifts: [{id: mug}]\n", False),
        ("settings.yaml", "seed: s\nfatigue: {max: 2, every: 30d}\ntimezone: Europe/Madrid\n", True),
        ("settings.yaml", "seed: s\nfatigue: {max: 0, every: 30d}\n", False),
        ("settings.yaml", "seeds: s\n", False),
    ],
)
def test_schema_and_loader_agree_on_catalog_and_settings(name: str, text: str, valid: bool, tmp_path: Path) -> None:
    (tmp_path / name).write_text(text)
    schema_ok = not list(_validator(_schema_for(tmp_path / name)).iter_errors(_json_ready(yaml.safe_load(text))))
    try:
        load_rule_set(tmp_path)
        loader_ok = True
    except RuleSetError:
        loader_ok = False
    assert (schema_ok, loader_ok) == (valid, valid)
