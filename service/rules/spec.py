"""The file formats marketers write: campaigns, ``catalog.yaml`` and ``settings.yaml``.

These msgspec types are the single description of what a file may contain;
the loader checks every key against them and reports each mistake with its
line.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from msgspec import Meta, Struct

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
Identifier = Annotated[
    str, Meta(min_length=1, max_length=100, pattern=ID_PATTERN, description="lower-case letters, digits, - and _")
]
MAX_EXPRESSION_LENGTH = 2000
MAX_MESSAGE_LENGTH = 500
ValidDays = Annotated[int, Meta(ge=1, le=3650)]
DURATION_PATTERN = r"^[1-9][0-9]{0,5}[mhdw]$"
Duration = Annotated[
    str, Meta(pattern=DURATION_PATTERN, description="a number and a unit: m (minutes), h, d or w, e.g. 90d")
]
Money = Annotated[float, Meta(ge=0, le=1_000_000_000)]
Share = Annotated[float, Meta(ge=0, le=1)]


class LimitSpec(Struct, forbid_unknown_fields=True):
    """At most ``per_customer`` surprises for one customer within any span of ``every``, in event time."""

    per_customer: Annotated[int, Meta(ge=1, le=10_000)]
    every: Duration


class BudgetSpec(Struct, forbid_unknown_fields=True):
    """A campaign's spending limits; each is optional."""

    awards: Annotated[int, Meta(ge=0, le=1_000_000_000)] | None = None
    cost: Money | None = None
    daily_awards: Annotated[int, Meta(ge=0, le=1_000_000_000)] | None = None
    daily_cost: Money | None = None


class PointsExpirySpec(Struct, forbid_unknown_fields=True):
    """Points not spent within ``after`` of being earned expire (the oldest are spent first)."""

    after: Duration


WebhookEvent = Literal["award.issued", "award.redeemed", "award.expired", "award.reversed"]


class WebhookSpec(Struct, forbid_unknown_fields=True):
    """A system told about awards: messages are signed with the secret in the named environment variable."""

    id: Identifier
    url: Annotated[str, Meta(pattern=r"^https?://", max_length=2000)]
    events: Annotated[list[WebhookEvent], Meta(min_length=1)]
    secret_env: Annotated[
        str,
        Meta(
            pattern=r"^WEBHOOK_SECRET_[A-Z0-9_]+$",
            max_length=100,
            description="the environment variable holding the signing secret; its name starts with WEBHOOK_SECRET_",
        ),
    ]


class FatigueSpec(Struct, forbid_unknown_fields=True):
    """At most ``max`` surprises per customer within any span of ``every``, whatever the campaign."""

    max: Annotated[int, Meta(ge=1, le=10_000)]
    every: Duration


class ActiveWindow(Struct, forbid_unknown_fields=True, rename={"starts": "from"}):
    """Dates (inclusive) between which a campaign may award, judged on the event's ``occurred_at``."""

    starts: Annotated[dt.date, Meta(description="First day the campaign may award (inclusive).")] | None = None
    until: Annotated[dt.date, Meta(description="Last day the campaign may award (inclusive).")] | None = None


class OfferSpec(Struct, forbid_unknown_fields=True):
    cost: Money | None = None
    """What one such offer is valued at for budgets; default: ``offer_cost`` from settings."""
    percent: Annotated[float, Meta(gt=0, le=100)] | None = None
    amount: Annotated[float, Meta(gt=0, le=1_000_000)] | None = None
    category: Annotated[str, Meta(max_length=200)] | None = None
    description: Annotated[str, Meta(max_length=MAX_MESSAGE_LENGTH)] | None = None
    valid_days: ValidDays | None = None


class _OneAward(Struct, forbid_unknown_fields=True):
    """Points, a gift or an offer: exactly one (the loader says so at the line)."""

    points: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    gift: Identifier | None = None
    offer: OfferSpec | None = None


class VariantSpec(_OneAward, forbid_unknown_fields=True):
    """One of a rule's reward variants: an award, its name in reports and its weight in the draw."""

    id: (
        Annotated[
            Identifier,
            Meta(
                description="The variant's name in awards and reports; default: the gift's id, "
                "points-N, or offer-K for the K-th variant"
            ),
        ]
        | None
    ) = None
    weight: Annotated[float, Meta(gt=0, le=1_000_000, description="Relative chance of being drawn; default 1.")] = 1.0


class AwardSpec(_OneAward, forbid_unknown_fields=True):
    one_of: (
        Annotated[
            list[VariantSpec],
            Meta(
                min_length=2,
                max_length=20,
                description="Reward variants: each customer is given one, the same every time for this rule, drawn "
                "by weight; when the drawn gift is out of stock, the next in this list that is not.",
            ),
        ]
        | None
    ) = None


class RuleSpec(Struct, forbid_unknown_fields=True):
    id: Annotated[Identifier, Meta(description="Unique within the campaign; awards record it.")]
    when: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=MAX_EXPRESSION_LENGTH,
            description="The condition, a rule-engine expression over the event and `customer`, e.g. "
            'type == "purchase" and order.total >= 300',
        ),
    ]
    award: Annotated[AwardSpec, Meta(description="Exactly one of points, gift or offer.")]
    chance: Annotated[Share, Meta(description="Share of matching events that win (a deterministic draw).")] = 1.0
    message: (
        Annotated[
            str, Meta(max_length=MAX_MESSAGE_LENGTH, description="Receipt text; {{ customer.first_name }} and such.")
        ]
        | None
    ) = None
    valid_days: Annotated[ValidDays, Meta(description="How long the award can be redeemed.")] | None = None
    limit: Annotated[LimitSpec, Meta(description="At most N awards of this rule per customer per span.")] | None = None
    priority: Annotated[
        int, Meta(ge=-1000, le=1000, description="Higher wins when limits leave room for fewer than qualify.")
    ] = 0


class CampaignSpec(Struct, forbid_unknown_fields=True):
    campaign: Annotated[Identifier, Meta(description="The campaign's id, unique across files.")]
    rules: Annotated[list[RuleSpec], Meta(min_length=1, max_length=1000)]
    description: Annotated[str, Meta(max_length=2000, description="Free text for people.")] | None = None
    active: Annotated[ActiveWindow, Meta(description="{from: DATE, until: DATE}, in the shop's time zone.")] | None = (
        None
    )
    holdout: Annotated[
        float, Meta(ge=0, lt=1, description="Share of customers held out as the control group, e.g. 0.1.")
    ] = 0.0
    budget: Annotated[BudgetSpec, Meta(description="Caps in awards and money, in all and per day.")] | None = None
    limit: (
        Annotated[LimitSpec, Meta(description="At most N surprises from this campaign per customer per span.")] | None
    ) = None


class GiftSpec(Struct, forbid_unknown_fields=True):
    id: Identifier
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    unit_cost: Annotated[float, Meta(ge=0, le=1_000_000)] = 0.0
    stock: Annotated[int, Meta(ge=0)] | None = None


class CatalogSpec(Struct, forbid_unknown_fields=True):
    gifts: Annotated[list[GiftSpec], Meta(max_length=10_000)] = []


class SettingsSpec(Struct, forbid_unknown_fields=True):
    seed: Annotated[str, Meta(min_length=1, max_length=200)] = "delight"
    """Keys the deterministic chance draws; change it and the winners change."""
    default_valid_days: ValidDays = 90
    """How long a gift or offer stays redeemable when its rule does not say."""
    point_value: Annotated[float, Meta(ge=0, le=1000)] = 0.0
    """What one point costs the shop, for award costs."""
    currency: Annotated[str, Meta(pattern="^[A-Z]{3}$")] = "EUR"
    """The shop's currency (ISO 4217): order totals, costs and point values are in it, and reports show money in
    it. Revenue adds up ``order.total`` as sent, whatever the event's ``order.currency``."""
    timezone: Annotated[str, Meta(min_length=1, max_length=64)] = "UTC"
    """The shop's IANA time zone: campaign dates and ``occurred_at.hour`` are read in it."""
    offer_cost: Money = 0.0
    """What one offer is valued at for budgets, unless the offer says ``cost``."""
    fatigue: FatigueSpec | None = None
    """The cross-campaign cap on surprises per customer."""
    interaction_awards: FatigueSpec | None = None
    """At most ``max`` awards (or hold-outs) per customer from interaction events within ``every``; 5 a day when
    not set. Past it an interaction is stored and counted but earns nothing, so scripted events cannot farm gifts."""
    points_expiry: PointsExpirySpec | None = None
    """When unspent points expire; never, when not set."""
    webhooks: list[WebhookSpec] = []
    """Systems to tell about awards issued, redeemed, expired and reversed."""
    programme_holdout: Annotated[float, Meta(ge=0, le=0.5)] = 0.0
    """Share of all customers whom no campaign surprises, e.g. 0.05: the programme's own control group, drawn by a
    keyed hash of the customer id, recorded as exposed whenever a rule would have given them something, and
    compared with everyone else by the programme report. Raising it moves some treated customers into the
    holdout (they stop being surprised); lowering it would move held-out customers into the treated group, so a
    rule set that lowers it is refused unless ``programme_holdout_release`` says so."""
    programme_holdout_release: bool = False
    """Lets this rule set lower ``programme_holdout`` below the one in force, releasing that share of the held-out
    customers into the treated group (the programme report then counts them from their later first exposure only
    if they had none before: their first exposure stays where it was, in the holdout)."""
    offline_redemptions: Duration = "3d"
    """How long after the fact a till that was offline may send a redemption with its own ``redeemed_at`` (whether
    an award had expired is judged at that time, so the longer this is, the longer an expired award can be
    redeemed by sending an earlier time)."""
