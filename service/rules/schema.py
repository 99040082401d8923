"""JSON Schemas for the rule files, generated from the same types the loader checks against.

Editors (VS Code with the YAML extension, JetBrains IDEs) validate and
complete rule files as they are typed when a file starts with
``# yaml-language-server: $schema=schema/campaign.schema.json``. The committed
copies in ``rules/schema/`` are regenerated with ``delight rules schema``; a
test fails while they differ from what this module produces.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from service.rules.spec import CampaignSpec, CatalogSpec, SettingsSpec

FILES: dict[str, tuple[type[msgspec.Struct], str, str]] = {
    "campaign.schema.json": (CampaignSpec, "Delight campaign", "One campaign: its rules, holdout, budget and limits."),
    "catalog.schema.json": (CatalogSpec, "Delight gift catalogue", "rules/catalog.yaml: the gifts rules may give."),
    "settings.schema.json": (SettingsSpec, "Delight settings", "rules/settings.yaml: engine-wide settings."),
}


def file_schemas() -> dict[str, dict[str, Any]]:
    schemas = {}
    for name, (model, title, description) in FILES.items():
        schema = msgspec.json.schema(model)
        schemas[name] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": title,
            "description": description,
            **schema,
        }
    return schemas


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in file_schemas().items():
        path = directory / name
        path.write_text(render(schema))
        written.append(path)
    return written
