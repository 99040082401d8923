"""Business-flow abuse (OWASP API6): scripted interactions cannot farm gifts past the interaction cap."""

from __future__ import annotations

from typing import Any

from tests.conftest import AppFactory, interaction, post_all, purchase

FOLLOW = """\
campaign: follow
rules:
  - id: mug-per-follow
    when: type == "interaction" and name == "social_follow"
    award: {gift: mug}
  - id: mug-per-purchase
    when: type == "purchase"
    award: {gift: mug}
"""


def follow(event_id: str, customer_id: str, at: str) -> dict[str, Any]:
    return {**interaction(event_id, customer_id, name="social_follow"), "occurred_at": at}


async def test_a_customer_gets_at_most_five_interaction_awards_a_day_by_default(
    rules_app: AppFactory, keys: dict[str, Any]
) -> None:
    async with rules_app(FOLLOW) as client:
        farmed = [follow(f"f-{i}", "c-farm", f"2026-03-02T09:{i:02d}:00Z") for i in range(12)]
        awards = []
        for event in farmed:  # in order: the cap is judged on what the customer already earned
            awards += await post_all(client, keys, [event])
        assert len(awards) == 5
        # the cap holds interactions only: a purchase still wins, and so does another customer
        assert len(await post_all(client, keys, [purchase("p-1", "c-farm", 20.0)])) == 1
        assert len(await post_all(client, keys, [follow("g-1", "c-other", "2026-03-02T09:30:00Z")])) == 1
        # a day later the customer can earn again
        assert len(await post_all(client, keys, [follow("f-next", "c-farm", "2026-03-03T10:00:00Z")])) == 1
        # events past the cap were stored and counted, just not rewarded
        profile = await client.get("/v1/customers/c-farm", headers=keys["customers:read"])
        assert profile.json()["interaction_counts"]["social_follow"] == 13


async def test_the_cap_is_set_in_settings_and_simulate_explains_it(rules_app: AppFactory, keys: dict[str, Any]) -> None:
    settings = "seed: http-tests\ninteraction_awards: {max: 2, every: 1h}\n"
    async with rules_app(FOLLOW, settings=settings) as client:
        awards = []
        for i in range(4):
            awards += await post_all(client, keys, [follow(f"f-{i}", "c-1", f"2026-03-02T09:{i:02d}:00Z")])
        assert len(awards) == 2
        # an hour on, the window holds none of those: two more, then the cap again
        later = []
        for i in range(3):
            later += await post_all(client, keys, [follow(f"f-later-{i}", "c-1", f"2026-03-02T10:3{i}:00Z")])
        assert len(later) == 2
        simulated = await client.post(
            "/v1/rules/simulate",
            json={"event": follow("f-sim", "c-1", "2026-03-02T10:40:00Z")},
            headers=keys["rules:admin"],
        )
    assert simulated.status_code == 200, simulated.text
    assert "interaction award cap" in simulated.text
