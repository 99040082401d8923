"""A generated rule pack shaped like a real shop's: many campaigns, each a handful of rules.

Conditions mix what marketers write: purchases by channel and basket size,
visit counts, categories in the basket, segments, lapsed customers,
interactions by name with attributes, and a few rules that pin no event type
at all (so every event must evaluate them). Awards mix points, gifts and
offers; campaigns carry chance draws, per-customer limits, budgets (large
enough to last a benchmark) and holdouts. The same seed gives the same pack.
"""

from __future__ import annotations

import random
from pathlib import Path

CHANNELS = ("pos", "web", "app")
CATEGORIES = ("handmade", "lamps", "textiles", "kitchen", "garden", "kids")
INTERACTIONS = ("social_follow", "review_posted", "newsletter_signup", "store_visit", "wishlist_add", "app_login")
SEGMENTS = ("vip", "new", "staff", "family")

CATALOG = """\
gifts:
  - id: candle
    name: Scented candle
    unit_cost: 2.20
  - id: tote
    name: Canvas tote bag
    unit_cost: 3.50
    stock: 1000000
  - id: vase
    name: Small handmade vase
    unit_cost: 4.50
    stock: 1000000
"""

SETTINGS = """\
seed: bench-pack
default_valid_days: 60
point_value: 0.01
offer_cost: 3.00
timezone: Europe/Madrid
fatigue: {max: 3, every: 30d}
"""

# The award-heavy pack: points on every purchase, as most loyalty programmes give, with a 10% holdout, beside
# the chance gifts; no fatigue cap, which would stop the points after three purchases a month.
AWARD_HEAVY_SETTINGS = SETTINGS.replace("fatigue: {max: 3, every: 30d}\n", "")
POINTS_ON_EVERY_PURCHASE = """\
campaign: points
holdout: 0.1
rules:
  - id: every-purchase
    when: type == "purchase"
    award: {points: 10}
"""


def _condition(rng: random.Random) -> str:
    channel = rng.choice(CHANNELS)
    category = rng.choice(CATEGORIES)
    amount = rng.choice((20, 50, 80, 120, 200, 300))
    shapes = [
        f'type == "purchase" and channel == "{channel}" and order.total >= {amount}',
        f'type == "purchase" and customer.purchase_count == {rng.randint(1, 12)}',
        f'type == "purchase" and order.total >= {amount} '
        f'and [item for item in order.items if item.category == "{category}"].length > 0',
        f'type == "purchase" and channel in ["web", "app"] '
        f"and (customer.days_since_last_purchase ?? 0) >= {rng.choice((30, 60, 90))}",
        f'type == "purchase" and "{rng.choice(SEGMENTS)}" in customer.segments and order.total >= {amount}',
        f'type == "purchase" and customer.favourite_category == "{category}" and order.total >= {amount}',
        f'type == "interaction" and name == "{rng.choice(INTERACTIONS)}"',
        f'type == "interaction" and name == "review_posted" and attributes.rating >= {rng.randint(3, 5)}',
        f'type == "interaction" and name in ["{rng.choice(INTERACTIONS)}", "{rng.choice(INTERACTIONS)}"] '
        f'and channel == "{channel}"',
        f"customer.lifetime_spend >= {amount * 10} and customer.purchase_count >= {rng.randint(2, 20)}",
    ]
    weights = [14, 10, 10, 8, 8, 8, 14, 8, 10, 10]
    return rng.choices(shapes, weights)[0]


def _award(rng: random.Random) -> str:
    return rng.choice(
        (
            f"{{points: {rng.choice((50, 100, 200, 500))}}}",
            f"{{gift: {rng.choice(('candle', 'tote', 'vase'))}}}",
            f"{{offer: {{percent: {rng.choice((5, 10, 15, 20))}, valid_days: 30}}}}",
        )
    )


def campaign_yaml(rng: random.Random, name: str, rules: int, chance_scale: float = 1.0) -> str:
    lines = [
        f"campaign: {name}",
        f"holdout: {rng.choice((0.05, 0.1, 0.1, 0.2))}",
        "budget: {awards: 10000000, cost: 100000000.00}",
    ]
    if rng.random() < 0.5:
        lines.append(f"limit: {{per_customer: {rng.randint(2, 5)}, every: 30d}}")
    lines.append("rules:")
    for i in range(rules):
        lines.append(f"  - id: r{i}")
        lines.append(f"    when: '{_condition(rng)}'")
        # surprises are rare: a rule wins one qualifying event in 10 to 100 (before ``chance_scale``)
        lines.append(f"    chance: {rng.choice((0.01, 0.02, 0.05, 0.1)) * chance_scale:.6g}")
        lines.append(f"    award: {_award(rng)}")
        if rng.random() < 0.7:
            lines.append(f"    limit: {{per_customer: 1, every: {rng.choice(('7d', '30d', '90d'))}}}")
    return "\n".join(lines) + "\n"


def write_pack(
    directory: Path,
    campaigns: int = 20,
    rules_per_campaign: int = 5,
    seed: int = 1,
    chance_scale: float = 1.0,
    award_heavy: bool = False,
) -> Path:
    """Write ``campaigns`` campaign files of ``rules_per_campaign`` rules each, with a catalog and settings.

    ``chance_scale`` multiplies every rule's chance (the same rules otherwise), to see how the load
    depends on how many events win something. ``award_heavy`` adds points on every purchase (held out for
    one customer in ten) and drops the fatigue cap, so that nearly every purchase awards something.
    """
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "catalog.yaml").write_text(CATALOG)
    (directory / "settings.yaml").write_text(AWARD_HEAVY_SETTINGS if award_heavy else SETTINGS)
    if award_heavy:
        (directory / "points.yaml").write_text(POINTS_ON_EVERY_PURCHASE)
    for c in range(campaigns):
        name = f"bench-{c:03d}"
        (directory / f"{name}.yaml").write_text(campaign_yaml(rng, name, rules_per_campaign, chance_scale))
    return directory


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="write the benchmark's rule pack to a directory")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--campaigns", type=int, default=20)
    parser.add_argument("--rules-per-campaign", type=int, default=5)
    parser.add_argument("--chance-scale", type=float, default=1.0, help="multiplies every rule's chance")
    parser.add_argument("--award-heavy", action="store_true", help="points on every purchase, no fatigue cap")
    args = parser.parse_args()
    print(
        write_pack(
            args.directory,
            args.campaigns,
            args.rules_per_campaign,
            chance_scale=args.chance_scale,
            award_heavy=args.award_heavy,
        )
    )
