"""Loading rule directories: clean packs load, and every mistake is reported as ``path:line: message``."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from service.rules.loader import RuleError, RuleSetError, load_rule_set
from service.rules.source import MAX_FILE_BYTES
from tests.conftest import DEMO_RULES, TEST_RULES

CATALOG = """\
gifts:
  - id: mug
    name: Branded mug
    unit_cost: 3.10
  - id: vase
    name: Small vase
    unit_cost: 4.50
"""

GOOD_CAMPAIGN = """\
campaign: good
rules:
  - id: mug-over-100
    when: type == "purchase" and order.total >= 100
    award: {gift: mug}
"""


def write(directory: Path, name: str, text: str) -> str:
    """Write a rule file; returns the text, so a test can find the line of what it wrote."""
    directory.mkdir(parents=True, exist_ok=True)
    text = textwrap.dedent(text)
    (directory / name).write_text(text)
    return text


def pack(directory: Path, **files: str) -> Path:
    """A rules directory with the test catalogue plus ``files`` (``name_yaml="..."`` → ``name.yaml``)."""
    write(directory, "catalog.yaml", CATALOG)
    for name, text in files.items():
        write(directory, name.replace("_yaml", ".yaml"), text)
    return directory


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """The 1-based line of the ``occurrence``-th line of ``text`` that contains ``needle``."""
    found = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(found) >= occurrence, f"{needle!r} is not in the text {occurrence} time(s)"
    return found[occurrence - 1]


def errors_of(directory: Path) -> list[RuleError]:
    with pytest.raises(RuleSetError) as caught:
        load_rule_set(directory)
    return caught.value.errors


def only_error(directory: Path) -> RuleError:
    errors = errors_of(directory)
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


def rule_file(when: str = 'type == "purchase"', award: str = "{gift: mug}", extra: str = "") -> str:
    text = f"campaign: c\nrules:\n  - id: r\n    when: {when}\n    award: {award}\n"
    return text + "".join(f"    {line}\n" for line in extra.splitlines())


# --- clean packs and the version ------------------------------------------------------------------------------------


def test_demo_pack_loads_cleanly_with_its_campaigns_gifts_and_settings(tmp_path: Path) -> None:
    shutil.copytree(DEMO_RULES, tmp_path / "rules")
    rule_set = load_rule_set(tmp_path / "rules")
    assert [c.name for c in rule_set.campaigns] == [
        "birthday",
        "furniture-wow",
        "service-recovery",
        "social-follow",
        "welcome",
        "win-back",
    ]
    assert rule_set.rule_count == 9
    assert set(rule_set.gifts) == {"small-vase", "framed-photo", "welcome-candle", "tote-bag", "apology-chocolates"}
    assert rule_set.settings.seed == "demo-shop-2026"
    assert rule_set.settings.default_valid_days == 60
    furniture = next(c for c in rule_set.campaigns if c.name == "furniture-wow")
    assert [r.id for r in furniture.rules] == ["vase-with-handmade", "points-on-third-visit", "thanks-for-review"]
    assert furniture.rules[0].chance == 0.25
    assert furniture.rules[0].gift is not None
    assert furniture.rules[0].gift.id == "small-vase"


def test_test_pack_loads_cleanly_with_its_campaign_gifts_and_settings(tmp_path: Path) -> None:
    shutil.copytree(TEST_RULES, tmp_path / "rules")
    rule_set = load_rule_set(tmp_path / "rules")
    [campaign] = rule_set.campaigns
    assert campaign.name == "loyal"
    assert [r.id for r in campaign.rules] == ["mug-over-100", "points-on-third", "review-offer", "vase-sometimes"]
    assert [r.kind for r in campaign.rules] == ["gift", "points", "offer", "gift"]
    assert set(rule_set.gifts) == {"mug", "vase"}
    assert rule_set.settings.seed == "test-seed"


def test_rule_remembers_the_line_it_starts_on(tmp_path: Path) -> None:
    text = write(tmp_path, "c.yaml", GOOD_CAMPAIGN)
    write(tmp_path, "catalog.yaml", CATALOG)
    [campaign] = load_rule_set(tmp_path).campaigns
    assert campaign.rules[0].line == line_of(text, "- id: mug-over-100")
    assert campaign.rules[0].source == str(tmp_path / "c.yaml")


def test_version_is_the_same_for_the_same_files_in_another_directory(tmp_path: Path) -> None:
    shutil.copytree(DEMO_RULES, tmp_path / "a")
    shutil.copytree(DEMO_RULES, tmp_path / "b")
    first = load_rule_set(tmp_path / "a").version
    assert load_rule_set(tmp_path / "a").version == first
    assert load_rule_set(tmp_path / "b").version == first
    assert len(first) == 16
    assert int(first, 16) >= 0  # hexadecimal


def test_version_changes_when_one_byte_of_one_file_changes(tmp_path: Path) -> None:
    shutil.copytree(DEMO_RULES, tmp_path / "a")
    shutil.copytree(DEMO_RULES, tmp_path / "b")
    settings = tmp_path / "b" / "settings.yaml"
    text = settings.read_text()
    settings.write_text(text.replace("60", "61", 1))
    assert load_rule_set(tmp_path / "a").version != load_rule_set(tmp_path / "b").version


def test_version_changes_when_only_a_comment_changes(tmp_path: Path) -> None:
    shutil.copytree(DEMO_RULES, tmp_path / "a")
    shutil.copytree(DEMO_RULES, tmp_path / "b")
    welcome = tmp_path / "b" / "welcome.yaml"
    welcome.write_text(welcome.read_text() + "# x\n")
    assert load_rule_set(tmp_path / "a").version != load_rule_set(tmp_path / "b").version


def test_missing_directory_is_an_error_not_an_empty_rule_set(tmp_path: Path) -> None:
    error = only_error(tmp_path / "nope")
    assert str(error) == f"{tmp_path / 'nope'}:1: rules directory does not exist"


# --- one error at a time, each at its line ------------------------------------------------------------------------


def test_yaml_syntax_error_is_reported_at_its_line(tmp_path: Path) -> None:
    text = rule_file(when='type == "purchase": oops')
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert error.path == str(tmp_path / "c.yaml")
    assert error.line == line_of(text, "oops") == 4
    assert error.message.startswith("YAML syntax:")
    assert str(error) == f"{tmp_path / 'c.yaml'}:4: {error.message}"


@pytest.mark.parametrize("character", ["\x00", "\x01", "\x7f", "\ufffe"])
def test_a_control_character_is_reported_at_its_line_not_raised(tmp_path: Path, character: str) -> None:
    text = rule_file(extra=f"message: hi{character}")
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert (error.line, error.message) == (
        line_of(text, "message"),
        f"YAML cannot hold the character U+{ord(character):04X}",
    )


def test_unknown_key_is_reported_at_the_line_of_the_key(tmp_path: Path) -> None:
    text = rule_file(extra="message: hi\ncolour: red")
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert error.line == line_of(text, "colour: red") == 7
    assert error.message.startswith("unknown key `colour` in rules[0]")
    assert "when" in error.message  # the known keys are listed


def test_unknown_top_level_key_is_reported_at_its_line(tmp_path: Path) -> None:
    text = "campaign: c\ndescription: x\nflavour: sweet\n" + rule_file().split("\n", 1)[1]
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert (error.line, error.message.split(" (")[0]) == (3, "unknown key `flavour` in the file")


def test_unknown_key_inside_a_flow_mapping_is_reported_at_its_line(tmp_path: Path) -> None:
    text = rule_file(award="{gift: mug, colour: red}")
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert error.line == line_of(text, "colour: red") == 5
    assert error.message.startswith("unknown key `colour` in rules[0].award")


def test_missing_key_is_reported_at_the_mapping_that_lacks_it(tmp_path: Path) -> None:
    text = "campaign: c\nrules:\n  - id: r\n    award: {gift: mug}\n"
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert (error.line, error.message) == (3, "missing key `when` in rules[0]")


def test_missing_campaign_key_is_reported(tmp_path: Path) -> None:
    pack(tmp_path, c_yaml='rules:\n  - id: r\n    when: type == "x"\n    award: {gift: mug}\n')
    error = only_error(tmp_path)
    assert (error.line, error.message) == (1, "missing key `campaign` in the file")


def test_wrong_type_is_reported_at_the_line_of_the_value(tmp_path: Path) -> None:
    text = 'campaign: c\nrules:\n  - id: r\n    when: type == "x"\n    award:\n      points: lots\n'
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert error.line == line_of(text, "points: lots") == 6
    assert error.message.startswith("`rules[0].award.points`: Expected `int")
    assert "got `str`" in error.message


def test_text_where_a_number_belongs_is_a_type_error(tmp_path: Path) -> None:
    text = rule_file(extra="chance: often")
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert error.line == line_of(text, "chance: often")
    assert error.message.startswith("`rules[0].chance`: Expected `float`")


@pytest.mark.parametrize("chance", ["1.5", "-0.1", "2"])
def test_chance_outside_zero_to_one_is_refused_at_its_line(tmp_path: Path, chance: str) -> None:
    text = rule_file(extra=f"chance: {chance}")
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert error.line == line_of(text, "chance:") == 6
    assert error.message.startswith("`rules[0].chance`: Expected `float`")
    assert ("<= 1.0" in error.message) or (">= 0.0" in error.message)


@pytest.mark.parametrize("chance", ["0", "1", "0.25", "1.0"])
def test_chance_at_or_within_the_bounds_loads(tmp_path: Path, chance: str) -> None:
    pack(tmp_path, c_yaml=rule_file(extra=f"chance: {chance}"))
    [campaign] = load_rule_set(tmp_path).campaigns
    assert campaign.rules[0].chance == float(chance)


def test_when_that_does_not_parse_is_reported_at_the_line_of_when(tmp_path: Path) -> None:
    text = rule_file(when="order.total >")
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert error.line == line_of(text, "when:") == 4
    assert error.message.startswith("`when` does not parse:")


@pytest.mark.parametrize(
    ("when", "field"),
    [
        ("order.totl > 3", "totl"),
        ("customr.purchase_count > 1", "customr"),
        ("customer.nope == 1", "nope"),
        ('type == "purchase" and colour == "red"', "colour"),
    ],
)
def test_when_naming_an_unknown_field_is_reported_with_the_field(tmp_path: Path, when: str, field: str) -> None:
    text = rule_file(when=when)
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert error.line == line_of(text, "when:") == 4
    assert error.message == f"`when` names an unknown field `{field}`"


@pytest.mark.parametrize(
    "when",
    [
        "order.total > 'x'",
        "customer.segments + 1",
        "customer.first_name > 3",
        "customer.purchase_count =~ 'x'",
    ],
)
def test_when_with_a_type_mismatch_is_refused_at_load_time(tmp_path: Path, when: str) -> None:
    text = rule_file(when=f'"{when}"')
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert error.line == line_of(text, "when:") == 4
    assert error.message.startswith("`when` is not well typed:")


@pytest.mark.parametrize(
    ("when", "operands"),
    [
        ("order.total > 'x'", '`order.total` (a number) and `"x"` (text) cannot be compared with `>`'),
        ("customer.first_name > 3", "`customer.first_name` (text) and `3` (a number) cannot be compared with `>`"),
        ("order.total + 'a' > 1", '`order.total` (a number) and `"a"` (text) cannot be used together with `+`'),
        ("customer.segments + 1 > 1", "`customer.segments` (a list) cannot be used with `+`"),
    ],
)
def test_a_type_mismatch_names_its_operands(tmp_path: Path, when: str, operands: str) -> None:
    text = rule_file(when=f'"{when}"')
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert error.line == line_of(text, "when:") == 4
    assert error.message == f"`when` is not well typed: data type mismatch: {operands}"


@pytest.mark.parametrize(
    ("when", "message"),
    [
        (
            'order.total == "lots"',
            '`when` compares `order.total` (a number) with `"lots"` (text) by `==`: a number is never equal to text, '
            "so this is always false",
        ),
        (
            'type == "purchase" and customer.purchase_count != "3"',
            '`when` compares `customer.purchase_count` (a number) with `"3"` (text) by `!=`: a number is never equal '
            "to text, so this is always true",
        ),
        (
            "customer.first_name == 3",
            "`when` compares `customer.first_name` (text) with `3` (a number) by `==`: text is never equal to a "
            "number, so this is always false",
        ),
        (
            '[item for item in order.items if item.quantity == "2"].length > 0',
            '`when` compares `item.quantity` (a number) with `"2"` (text) by `==`: a number is never equal to text, '
            "so this is always false",
        ),
    ],
)
def test_equality_of_a_number_and_text_is_refused_with_its_line(tmp_path: Path, when: str, message: str) -> None:
    """rule-engine types ``==`` loosely: values of two types are just unequal. Written in a rule, that is a typo
    that silently never (or always) matches."""
    text = rule_file(when=f"'{when}'")
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert (error.line, error.message) == (line_of(text, "when:"), message)


@pytest.mark.parametrize(
    "when",
    [
        'attributes.rating == "5"',  # free-form attributes hold any type
        "customer.birthday == null",
        "(customer.birthday&.month ?? 0) == occurred_at.month",
        'type == "purchase" and customer.purchase_count == 3',
    ],
)
def test_equality_of_values_that_can_be_equal_loads(tmp_path: Path, when: str) -> None:
    pack(tmp_path, c_yaml=rule_file(when=f"'{when}'"))
    assert load_rule_set(tmp_path).rule_count == 1


def test_when_error_in_a_folded_block_is_reported_at_the_when_key(tmp_path: Path) -> None:
    text = (
        "campaign: c\nrules:\n  - id: ok\n    when: type == 'x'\n    award: {points: 1}\n"
        "  - id: bad\n    when: >-\n      type == 'purchase'\n      and order.totl > 3\n    award: {points: 1}\n"
    )
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert (error.line, error.message) == (7, "`when` names an unknown field `totl`")


def test_unknown_gift_id_is_reported_at_the_gift(tmp_path: Path) -> None:
    text = 'campaign: c\nrules:\n  - id: r\n    when: type == "x"\n    award:\n      gift: teapot\n'
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert (error.line, error.message) == (6, "gift `teapot` is not in catalog.yaml")


def test_duplicate_rule_id_in_a_campaign_is_reported_at_the_second_id(tmp_path: Path) -> None:
    text = (
        "campaign: c\nrules:\n"
        "  - id: r\n    when: type == 'x'\n    award: {points: 1}\n"
        "  - id: s\n    when: type == 'x'\n    award: {points: 1}\n"
        "  - id: r\n    when: type == 'y'\n    award: {points: 2}\n"
    )
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert (error.line, error.message) == (9, "rule id `r` is used twice in this campaign")


def test_same_rule_id_in_two_campaigns_is_allowed(tmp_path: Path) -> None:
    pack(tmp_path, a_yaml=rule_file(), b_yaml=rule_file().replace("campaign: c", "campaign: d"))
    assert [c.name for c in load_rule_set(tmp_path).campaigns] == ["c", "d"]


def test_duplicate_campaign_id_across_files_is_reported_in_the_second_file(tmp_path: Path) -> None:
    second = "# the same campaign again\n" + GOOD_CAMPAIGN
    pack(tmp_path, a_yaml=GOOD_CAMPAIGN, b_yaml=second)
    error = only_error(tmp_path)
    assert error.path == str(tmp_path / "b.yaml")
    assert error.line == line_of(second, "campaign: good") == 2
    assert error.message == f"campaign `good` is also defined in {tmp_path / 'a.yaml'}"


def test_duplicate_gift_id_in_the_catalog_is_reported_at_the_second_gift(tmp_path: Path) -> None:
    catalog = "gifts:\n  - id: mug\n    name: Mug\n  - id: vase\n    name: Vase\n  - id: mug\n    name: Other mug\n"
    write(tmp_path, "catalog.yaml", catalog)
    error = only_error(tmp_path)
    assert error.path == str(tmp_path / "catalog.yaml")
    assert error.message == "gift id `mug` is listed twice"
    assert error.line == line_of(catalog, "- id: mug", occurrence=2) == 6


@pytest.mark.parametrize("field", ["message", "award.offer.category", "award.offer.description"])
def test_template_naming_an_unknown_field_is_reported_at_its_line(tmp_path: Path, field: str) -> None:
    if field == "message":
        text = rule_file(extra="message: 'Hi {{ customer.nickname }}'")
        needle = "message:"
    else:
        key = field.rsplit(".", 1)[1]
        text = (
            "campaign: c\nrules:\n  - id: r\n    when: type == 'x'\n    award:\n      offer:\n"
            f"        percent: 10\n        {key}: '{{{{ customer.nickname }}}}'\n"
        )
        needle = f"{key}:"
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert error.line == line_of(text, needle)
    assert (
        error.message == f"`rules[0].{field}`: template placeholder {{{{ customer.nickname }}}} names an unknown field"
    )


@pytest.mark.parametrize("award", ["{}", "{gift: mug, points: 5}", "{points: 5, offer: {percent: 10}}"])
def test_award_with_zero_or_two_kinds_is_refused_at_the_award(tmp_path: Path, award: str) -> None:
    text = rule_file(award=award)
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert (error.line, error.message) == (5, "`award` needs exactly one of `points`, `gift`, `offer` or `one_of`")


def test_offer_with_both_percent_and_amount_is_refused(tmp_path: Path) -> None:
    pack(tmp_path, c_yaml=rule_file(award="{offer: {percent: 10, amount: 5}}"))
    error = only_error(tmp_path)
    assert (error.line, error.message) == (5, "an offer needs exactly one of `percent` or `amount`")


def test_yaml_anchor_is_refused_at_its_line(tmp_path: Path) -> None:
    text = (
        "campaign: c\nrules:\n  - id: r\n    when: type == 'x'\n"
        "    award: &thing {points: 1}\n  - id: s\n    when: type == 'y'\n    award: *thing\n"
    )
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert (error.line, error.message) == (5, "YAML anchors and aliases are not allowed")


def test_yaml_alias_is_refused_at_its_line(tmp_path: Path) -> None:
    text = "campaign: c\nrules:\n  - id: r\n    when: type == 'x'\n    award: *thing\n"
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert (error.line, error.message) == (5, "YAML anchors and aliases are not allowed")


def test_billion_laughs_is_refused_without_expanding_it(tmp_path: Path) -> None:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    pack(tmp_path, c_yaml="\n".join(lines) + "\n")
    error = only_error(tmp_path)
    assert (error.line, error.message) == (1, "YAML anchors and aliases are not allowed")


@pytest.mark.parametrize(
    "tagged",
    [
        "!!python/object:os.system type == 'x'",
        "!!python/object/apply:os.system ['echo owned']",
        "!!python/name:os.system",
        "!custom type == 'x'",
        "!!binary aGVsbG8=",
    ],
)
def test_non_standard_yaml_tag_is_refused_at_its_line(tmp_path: Path, tagged: str) -> None:
    text = rule_file(when=tagged)
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert error.line == 4
    assert error.message.startswith("YAML tag ")
    assert error.message.endswith(" is not allowed")


def test_file_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    text = GOOD_CAMPAIGN + "#" * (MAX_FILE_BYTES - len(GOOD_CAMPAIGN)) + "\n"
    assert len(text.encode()) == MAX_FILE_BYTES + 1
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert str(error) == f"{tmp_path / 'c.yaml'}:1: file is larger than {MAX_FILE_BYTES} bytes"


def test_file_exactly_at_the_size_cap_loads(tmp_path: Path) -> None:
    text = GOOD_CAMPAIGN + "#" * (MAX_FILE_BYTES - len(GOOD_CAMPAIGN) - 1) + "\n"
    assert len(text.encode()) == MAX_FILE_BYTES
    pack(tmp_path, c_yaml=text)
    assert [c.name for c in load_rule_set(tmp_path).campaigns] == ["good"]


def test_size_cap_counts_bytes_not_characters(tmp_path: Path) -> None:
    text = GOOD_CAMPAIGN + "# " + "é" * (MAX_FILE_BYTES // 2) + "\n"
    assert len(text) < MAX_FILE_BYTES < len(text.encode())
    pack(tmp_path, c_yaml=text)
    assert only_error(tmp_path).message == f"file is larger than {MAX_FILE_BYTES} bytes"


def test_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    pack(tmp_path)
    (tmp_path / "c.yaml").write_bytes(b"campaign: caf\xe9\n")
    assert str(only_error(tmp_path)) == f"{tmp_path / 'c.yaml'}:1: file is not UTF-8 text"


# --- every error at once ------------------------------------------------------------------------------------------


def test_errors_in_several_files_are_all_reported_in_one_rule_set_error(tmp_path: Path) -> None:
    a = (
        "campaign: a\nrules:\n"
        "  - id: r\n    when: type == 'x'\n    award: {gift: mug}\n    colour: red\n"
        "  - id: s\n    when: order.totl > 3\n    award: {gift: mug}\n"
    )
    b = "campaign: b\nrules:\n  - id: r\n    when: type == 'x'\n    award: {gift: mug}\n    chance: 3\n"
    c = "campaign: c\nrules:\n  - id: r\n    when: type == 'x': oops\n"
    d = "rules:\n  - id: r\n    when: customr.purchase_count > 1\n    award: {points: 5}\n"
    e = "campaign: e\nrules:\n  - id: r\n    when: type == 'x'\n    award: {gift: teapot}\n"
    settings = "seed: s\ndefault_valid_days: forever\n"
    files = {"a_yaml": a, "b_yaml": b, "c_yaml": c, "d_yaml": d, "e_yaml": e, "settings_yaml": settings}
    pack(tmp_path, **files, ok_yaml=GOOD_CAMPAIGN)
    errors = errors_of(tmp_path)
    found = [(Path(err.path).name, err.line, err.message.split(":")[0].split(" (")[0]) for err in errors]
    assert found == [
        ("a.yaml", 6, "unknown key `colour` in rules[0]"),
        ("a.yaml", 8, "`when` names an unknown field `totl`"),
        ("b.yaml", 6, "`rules[0].chance`"),
        ("c.yaml", 4, "YAML syntax"),
        ("d.yaml", 1, "missing key `campaign` in the file"),
        ("d.yaml", 3, "`when` names an unknown field `customr`"),
        ("e.yaml", 5, "gift `teapot` is not in catalog.yaml"),
        ("settings.yaml", 2, "`default_valid_days`"),
    ]


def test_rule_set_error_message_lists_every_error_as_path_line_message(tmp_path: Path) -> None:
    b = rule_file(when="order.totl > 3").replace("campaign: c", "campaign: d")
    pack(tmp_path, a_yaml=rule_file(award="{gift: teapot}"), b_yaml=b)
    with pytest.raises(RuleSetError) as caught:
        load_rule_set(tmp_path)
    assert str(caught.value).splitlines() == [
        f"{tmp_path / 'a.yaml'}:5: gift `teapot` is not in catalog.yaml",
        f"{tmp_path / 'b.yaml'}:4: `when` names an unknown field `totl`",
    ]


def test_rule_with_a_misspelt_key_still_has_its_when_and_gift_checked(tmp_path: Path) -> None:
    text = rule_file(when="order.totl > 3", award="{gift: teapot}", extra="colour: red")
    pack(tmp_path, c_yaml=text)
    assert [(e.line, e.message.split(" (")[0]) for e in errors_of(tmp_path)] == [
        (4, "`when` names an unknown field `totl`"),
        (5, "gift `teapot` is not in catalog.yaml"),
        (6, "unknown key `colour` in rules[0]"),
    ]


def test_campaign_with_a_duplicate_id_still_has_its_rules_checked(tmp_path: Path) -> None:
    second = rule_file(when="order.totl > 3")
    pack(tmp_path, a_yaml=rule_file(), b_yaml=second)
    assert [(Path(e.path).name, e.line, e.message.split(" in /")[0]) for e in errors_of(tmp_path)] == [
        ("b.yaml", 1, "campaign `c` is also defined"),
        ("b.yaml", 4, "`when` names an unknown field `totl`"),
    ]


# --- reading interaction attributes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["attributes.rating >= 4", 'attributes["rating"] >= 4'])
def test_attribute_rating_loads_with_dot_or_subscript(tmp_path: Path, when: str) -> None:
    pack(tmp_path, c_yaml=rule_file(when=f"'{when}'"))
    [campaign] = load_rule_set(tmp_path).campaigns
    assert campaign.rules[0].when == when


# --- bounded nesting: the reader, the parser and the compiled conditions recurse once per level ----------------------


@pytest.mark.parametrize(
    "nested",
    [
        "    award: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "    award: " + "{a: " * 5_000 + "1" + "}" * 5_000 + "\n",
        "    award:\n" + "".join("  " * (i + 3) + "- \n" for i in range(500)),
    ],
    ids=["flow-lists", "flow-mappings", "block-lists"],
)
def test_deeply_nested_yaml_is_refused_at_its_line_without_a_traceback(tmp_path: Path, nested: str) -> None:
    text = "campaign: c\nrules:\n  - id: r\n    when: type == 'x'\n" + nested
    pack(tmp_path, c_yaml=text)
    error = only_error(tmp_path)
    assert error.message == "YAML nested more than 64 levels deep"
    assert 5 <= error.line <= 70  # where the 65th level opens


@pytest.mark.parametrize(
    "when",
    [
        "'" + "not " * 490 + "true'",
        "'" + "1 + " * 490 + "1 == 2'",
        '"' + "[" * 600 + "]" * 600 + ' == []"',
        "'" + 'type == "a" or ' * 70 + "true'",
    ],
    ids=["not-chain", "sum-chain", "nested-arrays", "70-ors"],
)
def test_a_when_nested_too_deeply_is_refused_at_its_line(tmp_path: Path, when: str) -> None:
    pack(tmp_path, c_yaml=rule_file(when=when))
    error = only_error(tmp_path)
    assert (error.line, error.message) == (
        4,
        "`when` is nested more than 64 levels deep; split it into simpler conditions",
    )


def test_a_long_but_shallow_when_still_loads(tmp_path: Path) -> None:
    pack(tmp_path, c_yaml=rule_file(when="'" + 'type == "a" or ' * 60 + "true'"))
    campaign = load_rule_set(tmp_path).by_name["c"]
    assert [r.id for r in campaign.rules] == ["r"]


# --- conditions whose cost has no bound ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "complaint"),
    [
        ("'[x for x in $range(1000000)] == []'", "calls `$range` with bounds"),
        ("'$range(order.total).length > 1'", "calls `$range` with bounds"),
        ("'[[i for i in order.items] for j in order.items] == []'", "puts a comprehension inside another"),
        (
            "'[[[i for i in order.items] for j in order.items] for k in order.items].length > 0'",
            "puts a comprehension inside another",
        ),
        ("'[i for i in order.items if $range(1000).length > 0] == []'", "calls `$range` inside a comprehension"),
        ("'[i for i in order.items if $split(i.sku).length > 0] == []'", "calls `$split` inside a comprehension"),
    ],
    ids=["range-million", "range-of-a-field", "nested-twice", "nested-three-deep", "range-per-item", "split-per-item"],
)
def test_a_when_whose_cost_has_no_bound_is_refused_at_its_line(tmp_path: Path, when: str, complaint: str) -> None:
    pack(tmp_path, c_yaml=rule_file(when=when))
    error = only_error(tmp_path)
    assert error.line == 4
    assert error.message.startswith(f"`when` {complaint}"), error.message


@pytest.mark.parametrize(
    "when",
    ["'$range(10).length == 10'", "'[i for i in order.items if i.quantity > 1].length > 0'"],
    ids=["small-range", "one-comprehension"],
)
def test_a_when_of_bounded_cost_still_loads(tmp_path: Path, when: str) -> None:
    pack(tmp_path, c_yaml=rule_file(when=when))
    assert [r.id for r in load_rule_set(tmp_path).by_name["c"].rules] == ["r"]
