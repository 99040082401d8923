"""The example campaign of the product description loads: files written to that shape keep working."""

from __future__ import annotations

import shutil
from pathlib import Path

from service.rules.loader import load_rule_set

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "tests" / "fixtures" / "product" / "furniture-wow.yaml"
"""The campaign file exactly as the product description shows it, kept in the repository."""


def test_the_product_descriptions_example_campaign_loads_with_the_demo_catalogue(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "furniture-wow.yaml")
    shutil.copy(ROOT / "rules" / "catalog.yaml", tmp_path / "catalog.yaml")
    rule_set = load_rule_set(tmp_path)
    [campaign] = rule_set.campaigns
    assert campaign.holdout == 0.10
    assert campaign.budget is not None
    assert campaign.budget.awards == 500
    assert [r.id for r in campaign.rules] == ["vase-with-handmade", "points-on-third-visit", "thanks-for-review"]
    assert campaign.rules[0].limit is not None
    assert campaign.rules[0].limit.seconds == 90 * 86400
