"""Loading a rules directory: every file checked, every error reported with its line.

A rule set with any error is refused as a whole; callers keep the previous one.
Campaign files are ``*.yaml`` / ``*.yml`` in the directory; ``catalog.yaml``
(gifts) and ``settings.yaml`` (engine-wide settings) are special.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import rule_engine
from rule_engine import ast
from rule_engine.ast.binary.comparison import FuzzyComparisonExpression

from service.rules import facts, operands
from service.rules.compiled import Clause, children, compile_clauses
from service.rules.index import requirements
from service.rules.ruleset import Budget, Campaign, Gift, Limit, Offer, Rule, RuleSet, duration_seconds
from service.rules.source import Located, SourceError, read_yaml
from service.rules.spec import (
    AwardSpec,
    BudgetSpec,
    CampaignSpec,
    CatalogSpec,
    LimitSpec,
    RuleSpec,
    SettingsSpec,
    VariantSpec,
)
from service.rules.template import Template, TemplateError
from service.webhooks import destinations

CATALOG_FILE = "catalog.yaml"
SETTINGS_FILE = "settings.yaml"
MAX_FILES = 500
MAX_TOTAL_BYTES = 20_000_000
MAX_WHEN_DEPTH = 64  # levels of a `when` expression; `a or b or c` nests one level per `or`

S = TypeVar("S", bound=msgspec.Struct)


@dataclass(frozen=True, slots=True, order=True)
class RuleError:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class RuleSetError(Exception):
    """The rule set has errors; nothing from it may be used."""

    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = sorted(errors)
        super().__init__("\n".join(map(str, self.errors)))


def check_programme_holdout(new: RuleSet, in_force: float, path: str = SETTINGS_FILE) -> None:
    """Refuse ``new`` if it lowers the programme holdout below ``in_force`` (the share of the rule set in force)
    without saying so: that would start surprising customers the programme has held out so far."""
    share = new.settings.programme_holdout
    if share >= in_force or new.settings.programme_holdout_release:
        return
    try:
        line = read_yaml(new.files.get(SETTINGS_FILE, "")).key_lines.get(("programme_holdout",), 1)
    except SourceError:
        line = 1
    released = (in_force - share) / in_force
    raise RuleSetError(
        [
            RuleError(
                path,
                line,
                f"programme_holdout goes down from {in_force:g} to {share:g}: {released:.0%} of the customers held "
                "out of every campaign so far would start being surprised, and the programme report would lose "
                "them from its holdout; add `programme_holdout_release: true` to do that on purpose",
            )
        ]
    )


def programme_share(files: dict[str, str]) -> float:
    """The ``programme_holdout`` of a stored rule set's files (0 when unset or unreadable)."""
    try:
        settings = read_yaml(files.get(SETTINGS_FILE) or "").data
        return float(settings.get("programme_holdout") or 0.0) if isinstance(settings, dict) else 0.0
    except (SourceError, TypeError, ValueError):
        return 0.0


def load_rule_set(directory: Path, *, now: dt.datetime | None = None) -> RuleSet:
    if not directory.is_dir():
        raise RuleSetError([RuleError(str(directory), 1, "rules directory does not exist")])
    paths = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in {".yaml", ".yml"})
    errors: list[RuleError] = []
    if len(paths) > MAX_FILES:
        raise RuleSetError([RuleError(str(directory), 1, f"more than {MAX_FILES} rule files")])
    texts: dict[str, str] = {}
    total = 0
    for path in paths:
        raw = path.read_bytes()
        total += len(raw)
        try:
            texts[path.name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            errors.append(RuleError(str(path), 1, "file is not UTF-8 text"))
    if total > MAX_TOTAL_BYTES:
        raise RuleSetError([RuleError(str(directory), 1, f"rule files exceed {MAX_TOTAL_BYTES} bytes in all")])
    return load_rule_set_texts(texts, directory, now=now, errors=errors)


def load_rule_set_texts(
    texts: dict[str, str],
    directory: Path,
    *,
    now: dt.datetime | None = None,
    errors: list[RuleError] | None = None,
) -> RuleSet:
    """A rule set from file names and their text (as stored with every version); ``directory`` names them in errors."""
    errors = [] if errors is None else errors

    def where(name: str) -> str:
        return str(directory / name)

    settings = SettingsSpec()
    if SETTINGS_FILE in texts:
        settings = _read_settings(texts[SETTINGS_FILE], where(SETTINGS_FILE), errors) or settings
    gifts = _read_catalog(texts.get(CATALOG_FILE), where(CATALOG_FILE), errors)

    context = facts.rule_context()
    campaigns: list[Campaign] = []
    seen: dict[str, str] = {}
    for name, text in texts.items():
        if name in (CATALOG_FILE, SETTINGS_FILE):
            continue
        source = where(name)
        located = _locate(text, source, errors)
        if located is None:
            continue
        spec = _convert(located, CampaignSpec, source, errors)
        if spec is None:
            _check_rules_alone(_File(source, located, errors, gifts, settings, context))
            continue
        campaign = _compile_campaign(spec, _File(source, located, errors, gifts, settings, context))
        if spec.campaign in seen:
            errors.append(
                RuleError(
                    source,
                    located.line(("campaign",)),
                    f"campaign `{spec.campaign}` is also defined in {seen[spec.campaign]}",
                )
            )
        elif campaign is not None:
            seen[spec.campaign] = source
            campaigns.append(campaign)

    if errors:
        raise RuleSetError(errors)
    digest = hashlib.sha256()
    for name in sorted(texts):
        digest.update(name.encode() + b"\0" + texts[name].encode() + b"\0")
    return RuleSet(
        version=digest.hexdigest()[:16],
        loaded_at=now or dt.datetime.now(dt.UTC),
        campaigns=tuple(sorted(campaigns, key=lambda c: c.name)),
        gifts=gifts or {},
        settings=settings,
        files=texts,
    )


def _read_settings(text: str, path: str, errors: list[RuleError]) -> SettingsSpec | None:
    located = _locate(text, path, errors)
    settings = None if located is None else _convert(located, SettingsSpec, path, errors)
    if located is None or settings is None:
        return None
    try:
        ZoneInfo(settings.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(RuleError(path, located.line(("timezone",)), f"unknown time zone `{settings.timezone}`"))
        return None
    refused = []
    for i, hook in enumerate(settings.webhooks):
        try:
            destinations.check_url(hook.url, destinations.allowed_networks())
        except (destinations.Refused, ValueError) as exc:
            refused.append(RuleError(path, located.line(("webhooks", i, "url")), f"webhook `{hook.id}`: {exc}"))
    errors.extend(refused)
    return None if refused else settings


def _read_catalog(text: str | None, path: str, errors: list[RuleError]) -> dict[str, Gift] | None:
    """The gifts by id; ``None`` when the catalogue itself has errors (gift references are then not checked)."""
    if text is None:
        return {}
    located = _locate(text, path, errors)
    catalog = None if located is None else _convert(located, CatalogSpec, path, errors)
    if located is None or catalog is None:
        return None
    gifts: dict[str, Gift] = {}
    for i, gift in enumerate(catalog.gifts):
        if gift.id in gifts:
            errors.append(RuleError(path, located.line(("gifts", i, "id")), f"gift id `{gift.id}` is listed twice"))
        gifts[gift.id] = Gift(gift.id, gift.name, _money(gift.unit_cost), gift.stock)
    return gifts


def _locate(text: str, path: str, errors: list[RuleError]) -> Located | None:
    try:
        return read_yaml(text)
    except SourceError as exc:
        errors.append(RuleError(path, exc.line, exc.message))
        return None


def _convert(located: Located, model: type[S], path: str, errors: list[RuleError]) -> S | None:
    before = len(errors)
    _check(located.data, model, (), located, path, errors)
    if len(errors) > before:
        return None
    try:
        return msgspec.convert(located.data, model, strict=True, from_attributes=False)
    except msgspec.ValidationError as exc:  # a constraint the field-by-field pass could not see
        errors.append(RuleError(path, 1, str(exc)))
        return None


def _struct_of(annotation: Any) -> tuple[str, type[msgspec.Struct]] | None:
    """``("one", S)`` for ``S`` or ``S | None``, ``("list", S)`` for ``list[S]``, else ``None``."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return "one", annotation
    if origin in (typing.Union, types.UnionType):
        members = [_struct_of(a) for a in typing.get_args(annotation)]
        structs = [m for m in members if m is not None and m[0] == "one"]
        return structs[0] if structs else None
    if origin is list:
        inner = _struct_of(typing.get_args(annotation)[0])
        return ("list", inner[1]) if inner and inner[0] == "one" else None
    return None


def _describe(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _check(
    data: Any,
    model: type[msgspec.Struct],
    at: tuple[str | int, ...],
    located: Located,
    path: str,
    errors: list[RuleError],
) -> None:
    """Check ``data`` against ``model`` key by key, so every mistake is reported at once."""
    here = _describe(at) or "the file"
    if not isinstance(data, dict):
        errors.append(RuleError(path, located.line(at), f"{here} must be a mapping"))
        return
    fields = {f.encode_name: f for f in msgspec.structs.fields(model)}
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            line = located.key_lines.get((*at, key), located.line(at))
            errors.append(RuleError(path, line, f"unknown key `{key}` in {here} (expected one of: {known})"))
    for name, info in fields.items():
        key_path = (*at, name)
        if name not in data:
            if info.required:
                errors.append(RuleError(path, located.line(at), f"missing key `{name}` in {here}"))
            continue
        value = data[name]
        nested = _struct_of(info.type)
        if nested and nested[0] == "one" and isinstance(value, dict):
            _check(value, nested[1], key_path, located, path, errors)
            continue
        if nested and nested[0] == "list" and isinstance(value, list):
            for i, item in enumerate(value):
                _check(item, nested[1], (*key_path, i), located, path, errors)
            _check_list_length(value, info.type, key_path, located, path, errors)
            continue
        try:
            msgspec.convert(value, info.type, strict=True)
        except msgspec.ValidationError as exc:
            message = str(exc).split(" - at `")[0]
            errors.append(RuleError(path, located.line(key_path), f"`{_describe(key_path)}`: {message}"))


def _check_list_length(
    value: list[Any], annotation: Any, at: tuple[str | int, ...], located: Located, path: str, errors: list[RuleError]
) -> None:
    for meta in typing.get_args(annotation)[1:] if typing.get_origin(annotation) is typing.Annotated else ():
        if isinstance(meta, msgspec.Meta):
            if meta.min_length is not None and len(value) < meta.min_length:
                errors.append(
                    RuleError(path, located.line(at), f"`{_describe(at)}` needs at least {meta.min_length} item(s)")
                )
            if meta.max_length is not None and len(value) > meta.max_length:
                errors.append(
                    RuleError(path, located.line(at), f"`{_describe(at)}` allows at most {meta.max_length} items")
                )


@dataclass(slots=True)
class _File:
    """One campaign file being compiled: where its errors go and what its rules may refer to."""

    path: str
    located: Located
    errors: list[RuleError]
    gifts: dict[str, Gift] | None
    """``None`` when the catalogue has errors of its own: gift references are then not checked."""
    settings: SettingsSpec
    context: rule_engine.Context

    def error(self, at: tuple[str | int, ...], message: str) -> None:
        self.errors.append(RuleError(self.path, self.located.line(at), message))


def _compile_campaign(spec: CampaignSpec, f: _File) -> Campaign | None:
    before = len(f.errors)
    rules: list[Rule] = []
    ids: set[str] = set()
    window = spec.active
    if window and window.starts and window.until and window.until < window.starts:
        f.error(("active",), "`active.until` is before `active.from`")
    for i, rule in enumerate(spec.rules):
        at = ("rules", i)
        if rule.id in ids:
            f.error((*at, "id"), f"rule id `{rule.id}` is used twice in this campaign")
        ids.add(rule.id)
        compiled = _compile_rule(spec.campaign, rule, at, f)
        if compiled is not None:
            rules.append(compiled)
    budget = _budget(spec.budget, f)
    if len(f.errors) > before:
        return None
    return Campaign(
        name=spec.campaign,
        description=spec.description,
        starts=window.starts if window else None,
        until=window.until if window else None,
        rules=tuple(rules),
        source=f.path,
        holdout=spec.holdout,
        budget=budget,
        limit=_limit(spec.limit),
    )


def _limit(spec: LimitSpec | None) -> Limit | None:
    return None if spec is None else Limit(spec.per_customer, duration_seconds(spec.every))


def _budget(spec: BudgetSpec | None, f: _File) -> Budget | None:
    if spec is None:
        return None
    for daily, total in (("daily_awards", "awards"), ("daily_cost", "cost")):
        daily_value, total_value = getattr(spec, daily), getattr(spec, total)
        if daily_value is not None and total_value is not None and daily_value > total_value:
            f.error(
                ("budget", daily), f"`budget.{daily}` ({daily_value}) is more than `budget.{total}` ({total_value})"
            )
    return Budget(
        awards=spec.awards,
        cost=None if spec.cost is None else _money(spec.cost),
        daily_awards=spec.daily_awards,
        daily_cost=None if spec.daily_cost is None else _money(spec.daily_cost),
    )


def _money(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(Decimal("0.01"))


def _check_rules_alone(f: _File) -> None:
    """When a campaign file is malformed, still report the errors inside its well-formed rules."""
    data = f.located.data
    rules = data.get("rules") if isinstance(data, dict) else None
    if not isinstance(rules, list):
        return
    for i, raw in enumerate(rules):
        at = ("rules", i)
        scratch: list[RuleError] = []
        _check(raw, RuleSpec, at, f.located, f.path, scratch)
        if not scratch:
            _compile_rule("?", msgspec.convert(raw, RuleSpec, strict=True), at, f)
            continue
        # The rule is malformed (reported already); still check the parts that are well formed.
        if isinstance(raw, dict):
            if isinstance(raw.get("when"), str):
                _compile_when(raw["when"], (*at, "when"), f)
            award = raw.get("award")
            if isinstance(award, dict) and isinstance(award.get("gift"), str):
                _find_gift(award["gift"], (*at, "award", "gift"), f)
            if isinstance(raw.get("message"), str):
                _template(raw["message"], (*at, "message"), f)


def _compile_when(text: str, at: tuple[str | int, ...], f: _File) -> tuple[Any, tuple[Clause, ...]] | None:
    """The parsed condition, type-checked against the facts, and its compiled clauses; ``None`` after reporting
    why not."""
    try:
        rule = rule_engine.Rule(text, context=f.context)
        if expression_depth(rule.statement.expression) > MAX_WHEN_DEPTH:
            raise RecursionError
        costly = unbounded(rule.statement.expression)
        if costly is not None:
            f.error(at, f"`when` {costly}")
            return None
        compiled = compile_clauses(text, rule)  # parses the clauses again, each on its own
    except RecursionError:  # rule-engine builds and checks the tree recursively; so do the compiler and evaluation
        f.error(at, f"`when` is nested more than {MAX_WHEN_DEPTH} levels deep; split it into simpler conditions")
    except rule_engine.RuleSyntaxError as exc:
        f.error(at, f"`when` does not parse: {exc.message}")
    except rule_engine.SymbolResolutionError as exc:
        f.error(at, f"`when` names an unknown field `{exc.symbol_name}`")
    except rule_engine.errors.ObjectAttributeError as exc:
        f.error(at, f"`when` names an unknown field `{exc.attribute_name}`")
    except rule_engine.EngineError as exc:
        named = operands.mismatch(exc) if exc.message.startswith("data type mismatch") else None
        f.error(at, f"`when` is not well typed: {exc.message}" + (f": {named}" if named else ""))
    else:
        nodes = list(expression_nodes(rule.statement.expression))
        never = operands.never_equal(nodes)
        if any(isinstance(node, FuzzyComparisonExpression) for node in nodes):
            f.error(
                at,
                "`when` uses a regular expression (=~, =~~, !~, !~~); these are not allowed because a "
                "pattern can take the engine forever; compare with ==, `in` or `.starts_with`",
            )
        elif never is not None:
            f.error(at, f"`when` {never}")
        else:
            return rule, compiled
    return None


MAX_RANGE = 1000
LIST_FUNCTIONS = frozenset({"range", "split", "map", "filter"})
"""Built-in functions that make a list as long as their input: inside a comprehension, a list per item."""


def unbounded(node: Any) -> str | None:
    """What makes a condition's cost grow without bound (then the rest of the sentence saying so), or ``None``.

    A comprehension costs the length of its list times its body, so one inside another multiplies: three deep over
    an order's items (up to 1,000) is a billion steps; so does a function that makes a list, called for each item.
    ``$range`` makes a list as long as it is told to. What is left costs at most a pass over a list of at most
    1,000 per clause, and evaluation stops at ``engine.TIME_LIMIT`` per event in any case.
    """
    stack = [(node, False)]
    while stack:
        node, inside_comprehension = stack.pop()
        if isinstance(node, ast.ComprehensionExpression):
            if inside_comprehension:
                return "puts a comprehension inside another; their costs multiply: use one, or `in`, `.length`"
            stack.append((node.iterable, inside_comprehension))  # made once
            stack.extend((child, True) for child in (node.result, node.condition) if child is not None)
            continue
        name = getattr(node.function, "name", None) if isinstance(node, ast.FunctionCallExpression) else None
        if inside_comprehension and name in LIST_FUNCTIONS:
            return f"calls `${name}` inside a comprehension; their costs multiply: make the list once, outside it"
        if name == "range":
            arguments = node.arguments or ()
            literal = all(isinstance(a, ast.FloatExpression) for a in arguments)
            if not literal or any(abs(a.value) > MAX_RANGE for a in arguments):
                return f"calls `$range` with bounds that are not numbers written out, or are beyond {MAX_RANGE}"
        stack.extend((child, inside_comprehension) for child in children(node))
    return None


def expression_depth(node: Any) -> int:
    """How deep a parsed ``rule-engine`` expression nests, counted without recursing."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children(node))
    return deepest


def expression_nodes(node: Any) -> Iterator[Any]:
    """Every node of a parsed ``rule-engine`` expression."""
    yield node
    for child in children(node):
        yield from expression_nodes(child)


def _find_gift(gift_id: str, at: tuple[str | int, ...], f: _File) -> Gift | None:
    if f.gifts is None:  # the catalogue has errors of its own; do not pile on
        return None
    gift = f.gifts.get(gift_id)
    if gift is None:
        f.error(at, f"gift `{gift_id}` is not in {CATALOG_FILE}")
    return gift


def _template(source: str | None, at: tuple[str | int, ...], f: _File) -> Template | None:
    if source is None:
        return None
    try:
        return Template.compile(source, facts.template_field_exists)
    except TemplateError as exc:
        f.error(at, f"`{_describe(at)}`: {exc}")
        return None


def _compile_rule(campaign: str, spec: RuleSpec, at: tuple[str | int, ...], f: _File) -> Rule | None:
    before = len(f.errors)
    when = _compile_when(spec.when, (*at, "when"), f)
    award = spec.award
    given = [k for k in ("points", "gift", "offer", "one_of") if getattr(award, k) is not None]
    if len(given) != 1:
        f.error((*at, "award"), "`award` needs exactly one of `points`, `gift`, `offer` or `one_of`")
    variants: list[tuple[AwardSpec | VariantSpec, tuple[str | int, ...]]]
    if award.one_of is not None:
        variants = [(v, (*at, "award", "one_of", i)) for i, v in enumerate(award.one_of)]
    else:
        variants = [(award, (*at, "award"))]
    compiled = [_compile_award(v, v_at, f) for v, v_at in variants]
    message = _template(spec.message, (*at, "message"), f)
    if len(f.errors) > before or when is None or any(c is None for c in compiled):
        return None
    condition, clauses = when
    rule = Rule(
        id=spec.id,
        campaign=campaign,
        when=spec.when,
        condition=condition,
        chance=spec.chance,
        points=None,
        gift=None,
        offer=None,
        message=message,
        valid_days=spec.valid_days,
        source=f.path,
        line=f.located.line(at),
        limit=_limit(spec.limit),
        priority=spec.priority,
        requires=requirements(condition.statement.expression),
        clauses=clauses,
    )
    awards = [
        dataclasses.replace(rule, points=c[0], gift=c[1], offer=c[2], cost=c[3]) for c in compiled if c is not None
    ]
    if award.one_of is None:
        return awards[0]
    names: dict[str, int] = {}
    for i, ((v, v_at), a) in enumerate(zip(variants, awards, strict=True)):
        assert isinstance(v, VariantSpec)
        name = v.id or (a.gift.id if a.gift else f"points-{a.points}" if a.points is not None else f"offer-{i + 1}")
        if name in names:
            f.error(v_at, f"two variants of this rule are named `{name}`; give each its own `id`")
        names[name] = i
        awards[i] = dataclasses.replace(a, variant=name, weight=v.weight)
    if len(f.errors) > before:
        return None
    return dataclasses.replace(awards[0], variant=None, weight=1.0, variants=tuple(awards))


def _compile_award(
    award: AwardSpec | VariantSpec, at: tuple[str | int, ...], f: _File
) -> tuple[int | None, Gift | None, Offer | None, Decimal] | None:
    """One award's points, gift or offer, and its cost; ``None`` after reporting what is wrong."""
    before = len(f.errors)
    if isinstance(award, VariantSpec) and sum(getattr(award, k) is not None for k in ("points", "gift", "offer")) != 1:
        f.error(at, "a variant needs exactly one of `points`, `gift` or `offer`")
    gift = None if award.gift is None else _find_gift(award.gift, (*at, "gift"), f)
    offer = None
    if award.offer is not None:
        o = award.offer
        if (o.percent is None) == (o.amount is None):
            f.error((*at, "offer"), "an offer needs exactly one of `percent` or `amount`")
        offer = Offer(
            percent=None if o.percent is None else Decimal(repr(o.percent)),
            amount=None if o.amount is None else Decimal(repr(o.amount)),
            category=_template(o.category, (*at, "offer", "category"), f),
            description=_template(o.description, (*at, "offer", "description"), f),
            valid_days=o.valid_days,
        )
    if len(f.errors) > before or (award.gift is not None and gift is None):
        return None
    return award.points, gift, offer, _award_cost(award, gift, f.settings)


def _award_cost(award: AwardSpec | VariantSpec, gift: Gift | None, settings: SettingsSpec) -> Decimal:
    """What one award costs the shop: the gift's unit cost, points at ``point_value``, an offer's ``cost``."""
    if gift is not None:
        return gift.unit_cost
    if award.points is not None:
        return (Decimal(award.points) * Decimal(repr(settings.point_value))).quantize(Decimal("0.01"))
    if award.offer is not None:
        return _money(award.offer.cost if award.offer.cost is not None else settings.offer_cost)
    return Decimal(0)
