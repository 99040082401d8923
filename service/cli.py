"""The ``delight`` command line: serve, keys, rules, db and openapi."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from service.lib.logging import get_logger
from service.lib.settings import Settings, SettingsError

if TYPE_CHECKING:
    import msgspec
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from service.lib.replica import ReplicaLag, ReportsDatabase
    from service.rules.ruleset import RuleSet

R = TypeVar("R", bound="msgspec.Struct")
T = TypeVar("T")

log = get_logger("delight.serve")


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from service.lib.db import upgrade_database
    from service.lib.embedded import EmbeddedPostgres, EmbeddedRedis, embedded_servers, watch
    from service.lib.server import LimitedHttpProtocol, raise_open_files_limit

    if _load_or_report(settings.app.rules_dir) is None:  # refuse to start before anything listens
        return 1
    if (settings.db.url is None or settings.redis.url is None) and not _lock_data_dir(settings.app.data_dir):
        print(
            f"delight: another `delight serve` is using {settings.app.data_dir}; stop it, "
            "or give this one its own DELIGHT_DATA_DIR",
            file=sys.stderr,
        )
        return 1
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    stopping = threading.Event()
    with embedded_servers(
        settings.app.data_dir, database_url=settings.db.url, redis_url=settings.redis.url, started=started
    ) as (
        database_url,
        redis_url,
    ):
        assert redis_url is not None
        upgrade_database(database_url)
        # Workers are separate processes: they find the servers through the environment.
        os.environ["DELIGHT_DATABASE_URL"] = database_url
        os.environ["DELIGHT_REDIS_URL"] = redis_url
        if args.workers > 1:  # metrics of all workers, added up at each scrape
            import shutil

            metrics_dir = settings.app.data_dir.resolve() / "metrics"
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        print(f"Delight listening on http://{args.host}:{args.port} (rules: {settings.app.rules_dir})", file=sys.stderr)
        # uvicorn re-raises SIGTERM/SIGINT once it has shut down; turn that into a
        # normal exit so the embedded servers above are stopped on the way out.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _exit_cleanly)
        watch(started, _embedded_server_died, stopping)
        # Room for the connections allowed, the database pool, and the embedded servers' sockets.
        raise_open_files_limit(2 * settings.app.max_connections + 1024)
        try:
            uvicorn.run(
                "service.app:create_app",
                factory=True,
                host=args.host,
                port=args.port,
                workers=args.workers,
                log_config=None,
                access_log=False,
                proxy_headers=False,
                timeout_graceful_shutdown=20,
                http=LimitedHttpProtocol,
            )
        finally:
            stopping.set()  # the embedded servers are stopped on purpose from here on
    return 1 if _died else 0


_died: list[str] = []


def _embedded_server_died(name: str) -> None:
    """An embedded server is gone and nothing here can bring it back: stop, as on SIGTERM, and exit with 1."""
    log.error("embedded_server_died", server=name, action="stopping; start delight serve again")
    _died.append(name)
    os.kill(os.getpid(), signal.SIGTERM)


_held_locks: list[object] = []


def _lock_data_dir(data_dir: Path) -> bool:
    """Hold an exclusive lock on the data dir for this process's life: one server owns its embedded servers."""
    import fcntl

    data_dir.mkdir(parents=True, exist_ok=True)
    handle = (data_dir / "serve.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return False
    _held_locks.append(handle)
    return True


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(1 if _died else 0)


def _keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from service.keys.service import InvalidScopesError, check_scopes, create_key
    from service.lib.db import create_engine, create_sessionmaker, transaction, upgrade_database
    from service.lib.embedded import embedded_servers

    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    try:
        check_scopes(scopes)
    except InvalidScopesError as exc:
        print(f"delight: {exc}", file=sys.stderr)
        return 2

    async def create(url: str) -> tuple[str, str]:
        engine = create_engine(url)
        try:
            async with transaction(create_sessionmaker(engine)) as session:
                return await create_key(session, args.name, scopes)
        finally:
            await engine.dispose()

    with embedded_servers(settings.app.data_dir, database_url=settings.db.url, redis_url=None, need_redis=False) as (
        database_url,
        _,
    ):
        upgrade_database(database_url)
        key_id, key = asyncio.run(create(database_url))
    print(f"Created API key {key_id} named {args.name!r} with scopes {', '.join(sorted(set(scopes)))}.")
    print("It is shown only this once and stored only as a hash:")
    print(key)
    return 0


def _keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from service.keys import repository
    from service.lib.db import create_engine, create_sessionmaker, upgrade_database
    from service.lib.embedded import embedded_servers

    async def rows(url: str) -> list[Any]:
        engine = create_engine(url)
        try:
            async with create_sessionmaker(engine)() as session:
                return await repository.all_keys(session)
        finally:
            await engine.dispose()

    with embedded_servers(settings.app.data_dir, database_url=settings.db.url, redis_url=None, need_redis=False) as (
        database_url,
        _,
    ):
        upgrade_database(database_url)
        keys = asyncio.run(rows(database_url))

    def when(value: Any) -> str:
        return value.strftime("%Y-%m-%d %H:%M") if value else "-"

    print(f"{'key id':<17} {'name':<24} {'created':<17} {'last used':<17} {'revoked':<17} scopes")
    for k in keys:
        print(
            f"{k.key_id:<17} {k.name[:24]:<24} {when(k.created_at):<17} {when(k.last_used_at):<17} "
            f"{when(k.revoked_at):<17} {','.join(k.scopes)}"
        )
    return 0


def _keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from service.keys import repository
    from service.keys.service import forget, revoke_key
    from service.lib.db import create_engine, create_sessionmaker, transaction, upgrade_database
    from service.lib.embedded import embedded_servers
    from service.lib.redis import close, connect

    async def run(url: str) -> str:
        engine = create_engine(url)
        try:
            async with transaction(create_sessionmaker(engine)) as session:
                if await revoke_key(session, args.key_id, actor="cli"):
                    outcome = "revoked"
                else:
                    outcome = "already revoked" if await repository.known(session, args.key_id) else "unknown"
        finally:
            await engine.dispose()
        if outcome == "revoked" and settings.redis.url:
            redis = connect(settings.redis.url, timeout=2.0)
            try:
                await forget(redis, args.key_id)
            finally:
                await close(redis)
        return outcome

    with embedded_servers(settings.app.data_dir, database_url=settings.db.url, redis_url=None, need_redis=False) as (
        database_url,
        _,
    ):
        upgrade_database(database_url)
        outcome = asyncio.run(run(database_url))
    if outcome == "unknown":
        print(f"delight: no key {args.key_id!r}", file=sys.stderr)
        return 1
    print(f"Key {args.key_id} {outcome}.")
    if outcome == "revoked" and not settings.redis.url:
        print("Running servers refuse it within a second or two (at once when revoked over HTTP).")
    return 0


def _console_login(args: argparse.Namespace, settings: Settings) -> int:
    from service.console import sessions
    from service.lib.db import create_engine, create_sessionmaker, transaction, upgrade_database
    from service.lib.embedded import embedded_servers

    async def run(url: str) -> str | None:
        engine = create_engine(url)
        try:
            async with transaction(create_sessionmaker(engine)) as session:
                if await sessions.key_holder(session, args.key_id) is None:
                    return None
                return await sessions.new_link(session, args.key_id)
        finally:
            await engine.dispose()

    with embedded_servers(settings.app.data_dir, database_url=settings.db.url, redis_url=None, need_redis=False) as (
        database_url,
        _,
    ):
        upgrade_database(database_url)
        token = asyncio.run(run(database_url))
    if token is None:
        print(f"delight: no key {args.key_id!r} that is not revoked (see `delight keys list`)", file=sys.stderr)
        return 1
    minutes = sessions.LINK_LIFETIME.seconds // 60
    print(f"Open this link within {minutes} minutes to sign in once with the key {args.key_id}:")
    print(f"{args.url.rstrip('/')}/console/link/{token}")
    return 0


def _customers_erase(args: argparse.Namespace, settings: Settings) -> int:
    from service.customers.erasure import erase_customer
    from service.lib.db import create_engine, create_sessionmaker, transaction, upgrade_database
    from service.lib.embedded import embedded_servers

    async def run(url: str) -> bool:
        engine = create_engine(url)
        try:
            async with transaction(create_sessionmaker(engine)) as session:
                return await erase_customer(session, args.customer_id, actor="cli")
        finally:
            await engine.dispose()

    with embedded_servers(settings.app.data_dir, database_url=settings.db.url, redis_url=None, need_redis=False) as (
        database_url,
        _,
    ):
        upgrade_database(database_url)
        erased = asyncio.run(run(database_url))
    if not erased:
        print(f"delight: no customer {args.customer_id!r}", file=sys.stderr)
        return 1
    print(f"Customer {args.customer_id!r} erased.")
    return 0


def _jobs_run(args: argparse.Namespace, settings: Settings) -> int:
    import datetime as dt

    import msgspec

    from service.awards.expiry import points_after, run_expiry
    from service.events.history import keep_history
    from service.lib.db import create_engine, create_sessionmaker, transaction
    from service.lib.embedded import embedded_servers
    from service.projection.apply import catch_up, projector_connection

    rule_set = _load_or_report(settings.app.rules_dir)
    if rule_set is None:
        return 1

    async def run(url: str) -> dict[str, object]:
        engine = create_engine(url)
        try:
            async with transaction(create_sessionmaker(engine)) as session:
                expiry = await run_expiry(
                    session, dt.datetime.now(dt.UTC), points_after(rule_set), rule_set.settings.webhooks
                )
            history = await keep_history(engine, dt.datetime.now(dt.UTC), settings.app.retention_days)
        finally:
            await engine.dispose()
        async with projector_connection(url) as conn:
            projection = await catch_up(conn)
        return {
            **msgspec.structs.asdict(expiry),
            "partitions_made": history.partitions_made,
            "months_archived": history.months_archived,
            "history_unfinished": history.unfinished,
            "projection_events_applied": projection.events,
            "projection_complete_until": projection.complete_at,
        }

    with embedded_servers(settings.app.data_dir, database_url=settings.db.url, redis_url=None, need_redis=False) as (
        database_url,
        _,
    ):
        report = asyncio.run(run(database_url))
    print(msgspec.json.encode(report).decode())
    return 0


def _rules_check(args: argparse.Namespace, settings: Settings) -> int:

    directory = Path(args.dir) if args.dir else settings.app.rules_dir
    rule_set = _load_or_report(directory)
    if rule_set is None:
        return 1
    print(
        f"{directory}: {len(rule_set.campaigns)} campaign(s), {rule_set.rule_count} rule(s), "
        f"version {rule_set.version}: OK"
    )
    return 0


def _rules_backtest(args: argparse.Namespace, settings: Settings) -> int:
    import datetime as dt
    import json
    import time

    from service.lib.embedded import embedded_servers
    from service.rules.backtest import Report, backtest, render_table, stored_events

    rule_set = _load_or_report(Path(args.dir) if args.dir else settings.app.rules_dir)
    if rule_set is None:
        return 1
    try:
        first = dt.date.fromisoformat(args.start)
        last = dt.date.fromisoformat(args.end)
    except ValueError as exc:
        print(f"delight: --from and --to take dates like 2026-03-01 ({exc})", file=sys.stderr)
        return 2
    if last < first:
        print("delight: --to is before --from", file=sys.stderr)
        return 2
    zone = rule_set.zone
    start = dt.datetime(first.year, first.month, first.day, tzinfo=zone)
    end = dt.datetime(last.year, last.month, last.day, tzinfo=zone) + dt.timedelta(days=1)

    async def run(url: str) -> tuple[Report, ReplicaLag | None]:
        async with _reports_database(url, settings) as reports_db:
            lag = await reports_db.caught_up()
            async with reports_db.engine.connect() as connection:
                return await backtest(rule_set, stored_events(connection), start, end), lag

    started = time.perf_counter()
    with embedded_servers(settings.app.data_dir, database_url=settings.db.url, redis_url=None, need_redis=False) as (
        database_url,
        _,
    ):
        read = _or_unavailable(lambda: asyncio.run(run(database_url)))
    if read is None:
        return 1
    report, lag = read
    elapsed = time.perf_counter() - started
    if args.format == "json":
        print(json.dumps({**report.as_dict(), **_lag_fields(lag), "seconds": round(elapsed, 2)}, indent=2))
    else:
        print(render_table(report))
        _say_read_on(lag)
        print(f"({elapsed:.1f} s)", file=sys.stderr)
    return 0


def _rules_diff(args: argparse.Namespace, settings: Settings) -> int:
    """``delight rules diff``: a draft against the rule set in force, both judging the stored events of the period
    in one pass, writing nothing."""
    import datetime as dt

    from service.lib.embedded import embedded_servers
    from service.rules.backtest import stored_events
    from service.rules.impact import Impact, impact, render_table
    from service.rules.loader import RuleSetError

    try:
        first = dt.date.fromisoformat(args.start)
        last = dt.date.fromisoformat(args.end)
    except ValueError as exc:
        print(f"delight: --from and --to take dates like 2026-03-01 ({exc})", file=sys.stderr)
        return 2
    if last < first:
        print("delight: --to is before --from", file=sys.stderr)
        return 2
    draft_path = Path(args.draft)
    whole_draft: RuleSet | None = None
    if draft_path.is_file():
        if draft_path.suffix not in {".yaml", ".yml"}:
            print(f"delight: {draft_path} is neither a rules directory nor a .yaml file", file=sys.stderr)
            return 2
    else:  # a directory is a whole rule set: checked before any server starts
        whole_draft = _load_or_report(draft_path)
        if whole_draft is None:
            return 1

    async def run(url: str) -> tuple[Impact, ReplicaLag | None]:
        async with _reports_database(url, settings) as reports_db:
            lag = await reports_db.caught_up()
            live = await _rules_in_force(reports_db.engine, settings.app.rules_dir)
            draft = whole_draft or _draft_file(live, draft_path)
            start = dt.datetime(first.year, first.month, first.day, tzinfo=live.zone)
            end = dt.datetime(last.year, last.month, last.day, tzinfo=live.zone) + dt.timedelta(days=1)
            async with reports_db.engine.connect() as connection:
                return await impact(live, draft, stored_events(connection), start, end), lag

    with embedded_servers(settings.app.data_dir, database_url=settings.db.url, redis_url=None, need_redis=False) as (
        database_url,
        _,
    ):
        try:
            read = _or_unavailable(lambda: asyncio.run(run(database_url)))
        except RuleSetError as exc:
            _print_rule_errors(exc)
            return 1
    if read is None:
        return 1
    result, lag = read
    if args.format == "json":
        print(json.dumps({**result.as_dict(), **_lag_fields(lag)}, indent=2))
    else:
        print(render_table(result))
        _say_read_on(lag)
    return 0


async def _rules_in_force(engine: AsyncEngine, rules_dir: Path) -> RuleSet:
    """The rule set in force in the database; the one in ``rules_dir``, saying so, when none is stored yet.
    Raises ``RuleSetError``."""
    from service.lib.db import create_sessionmaker
    from service.rules import repository
    from service.rules.loader import load_rule_set, load_rule_set_texts

    async with create_sessionmaker(engine)() as session:
        in_force = await repository.active(session)
    if in_force is None:
        print(f"delight: no rule set is in force in the database; comparing with {rules_dir}", file=sys.stderr)
        return load_rule_set(rules_dir)
    return load_rule_set_texts(in_force[1], rules_dir)


def _draft_file(live: RuleSet, path: Path) -> RuleSet:
    """One campaign file as a draft, with the settings and catalog of ``live`` (as ``simulate`` takes a draft).
    Raises ``RuleSetError``."""
    from service.rules.loader import RuleError, RuleSetError
    from service.rules.simulate import draft_rule_set

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RuleSetError([RuleError(str(path), 1, "file is not UTF-8 text")]) from None
    return draft_rule_set(live, {path.name: text}, path.parent)


def _report_uplift(args: argparse.Namespace, settings: Settings) -> int:
    """``delight report uplift`` and ``delight report programme``: the same reading of the projection."""
    import datetime as dt
    import zoneinfo

    from service.reports import programme, uplift
    from service.reports.uplift_html import render_html
    from service.rules.loader import RuleSetError, load_rule_set
    from service.rules.spec import SettingsSpec

    campaign = getattr(args, "campaign", None)  # None: the programme
    if campaign is not None and not 1 <= args.window_days <= uplift.MAX_WINDOW_DAYS:
        print(f"delight: --window-days must be between 1 and {uplift.MAX_WINDOW_DAYS}", file=sys.stderr)
        return 2
    if not 50 <= args.cap_percentile <= 100:
        print("delight: --cap-percentile must be between 50 and 100", file=sys.stderr)
        return 2
    try:
        tiers = uplift.parse_spend_tiers(args.spend_tiers)
    except ValueError:
        print(f"delight: --spend-tiers takes {uplift.SPEND_TIERS_RULE}", file=sys.stderr)
        return 2
    try:
        rule_set: RuleSet | None = load_rule_set(settings.app.rules_dir)
    except RuleSetError:
        rule_set = None  # the report stands on the stored exposures; the rule set only adds the holdout
    zone = rule_set.zone if rule_set else zoneinfo.ZoneInfo("UTC")
    try:
        first = dt.date.fromisoformat(args.start) if args.start else None
        last = dt.date.fromisoformat(args.end) if args.end else None
    except ValueError as exc:
        print(f"delight: --from and --to take dates like 2026-03-01 ({exc})", file=sys.stderr)
        return 2
    since = dt.datetime(first.year, first.month, first.day, tzinfo=zone) if first else None
    until = dt.datetime(last.year, last.month, last.day, tzinfo=zone) + dt.timedelta(days=1) if last else None
    if since and until and until <= since:
        print("delight: --to is before --from", file=sys.stderr)
        return 2
    active = rule_set.by_name.get(campaign) if rule_set and campaign else None
    currency = (rule_set.settings if rule_set else SettingsSpec()).currency

    async def read_programme(connection: AsyncConnection) -> programme.ProgrammeReport:
        return await programme.programme_report(
            connection,
            holdout=rule_set.settings.programme_holdout if rule_set else 0.0,
            currency=currency,
            since=since,
            until=until,
            cap_percentile=args.cap_percentile,
            net_returns=args.net_returns,
            by=args.by,
            spend_tiers=tiers,
        )

    async def read_uplift(connection: AsyncConnection) -> uplift.UpliftReport:
        assert campaign is not None
        return await uplift.uplift_report(
            connection,
            campaign=campaign,
            window_days=args.window_days,
            holdout=active.holdout if active else None,
            currency=currency,
            rule_ids=[r.id for r in active.rules] if active else (),
            since=since,
            until=until,
            target_uplift=args.target_uplift,
            cap_percentile=args.cap_percentile,
            net_returns=args.net_returns,
            by=args.by,
            spend_tiers=tiers,
        )

    if campaign is None:
        return _print_report(
            settings, args.format, read_programme, programme.to_csv, programme.render_html, programme.render_table
        )
    return _print_report(settings, args.format, read_uplift, uplift.to_csv, render_html, uplift.render_table)


def _print_report(
    settings: Settings,
    format: str,
    read: Callable[[AsyncConnection], Awaitable[R]],
    as_csv: Callable[[R], str],
    as_html: Callable[[R], str],
    as_table: Callable[[R], str],
) -> int:
    """A report ``read`` from the projection once every event committed before now is in it, printed as
    ``format`` asks (JSON, CSV, HTML or a table), on the database configured or an embedded one."""
    import msgspec

    from service.lib.embedded import embedded_servers
    from service.lib.replica import with_lag
    from service.projection.apply import catch_up, projector_connection

    async def run(url: str) -> R:
        async with projector_connection(url) as conn:
            await catch_up(conn)  # every event committed before now, whether or not a server is running
        async with _reports_database(url, settings) as reports_db:
            lag = await reports_db.caught_up()
            async with reports_db.engine.connect() as connection:
                return with_lag(await read(connection), lag)

    with embedded_servers(settings.app.data_dir, database_url=settings.db.url, redis_url=None, need_redis=False) as (
        database_url,
        _,
    ):
        report = _or_unavailable(lambda: asyncio.run(run(database_url)))
    if report is None:
        return 1
    if format == "json":
        print(msgspec.json.format(msgspec.json.encode(report)).decode())
    elif format == "csv":
        sys.stdout.write(as_csv(report))
    elif format == "html":
        sys.stdout.write(as_html(report))
    else:
        print(as_table(report))
    return 0


@contextlib.asynccontextmanager
async def _reports_database(url: str, settings: Settings) -> AsyncIterator[ReportsDatabase]:
    """The primary at ``url`` and the standby reports read (``DELIGHT_REPORTS_DATABASE_URL``), if any, as the
    command line's tools read them: without the requests' time bounds."""
    from service.lib.db import create_engine, create_sessionmaker
    from service.lib.replica import reports_database

    unbounded = replace(settings.db, timeout=None)
    engine = create_engine(url, unbounded)
    reports_db = reports_database(engine, create_sessionmaker(engine), unbounded)
    try:
        yield reports_db
    finally:
        await reports_db.close()
        await engine.dispose()


def _or_unavailable(read: Callable[[], T]) -> T | None:
    """What ``read`` gives; ``None``, having said why, when the database reports read cannot serve (the standby
    too far behind, or no longer a standby)."""
    from service.lib.errors import ServiceUnavailableError

    try:
        return read()
    except ServiceUnavailableError as exc:
        print(f"delight: {exc.detail}", file=sys.stderr)
        return None


def _lag_fields(lag: ReplicaLag | None) -> dict[str, float | int | None]:
    """The fields every report has, for a back-test's or a diff's JSON."""
    if lag is None:
        return {"replica_lag_seconds": None, "replica_lag_bytes": None}
    return {"replica_lag_seconds": lag.seconds, "replica_lag_bytes": lag.bytes}


def _say_read_on(lag: ReplicaLag | None) -> None:
    from service.reports.uplift import read_on_lines

    if lag is not None:
        for line in read_on_lines(lag.seconds, lag.bytes):
            print(f"({line})", file=sys.stderr)


def _report_campaigns(args: argparse.Namespace, settings: Settings) -> int:
    """``delight report campaigns``: every campaign at a glance, as ``GET /v1/reports/campaigns`` gives it."""
    from service.reports import overview
    from service.reports.uplift import MAX_WINDOW_DAYS

    if not 1 <= args.window_days <= MAX_WINDOW_DAYS:
        print(f"delight: --window-days must be between 1 and {MAX_WINDOW_DAYS}", file=sys.stderr)
        return 2
    rule_set = _load_or_report(settings.app.rules_dir)
    if rule_set is None:
        return 1

    async def read(connection: AsyncConnection) -> overview.Overview:
        return await overview.overview(connection, rule_set, window_days=args.window_days)

    return _print_report(settings, args.format, read, overview.to_csv, overview.render_html, overview.render_table)


def _reports_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from service.lib.db import upgrade_database
    from service.lib.embedded import embedded_servers
    from service.projection.apply import Progress, catch_up, projector_connection, rebuild

    async def run(url: str) -> Progress:
        async with projector_connection(url) as conn:
            built = await rebuild(conn)
            await catch_up(conn)  # what committed while it was building
        return built

    started = time.perf_counter()
    with embedded_servers(settings.app.data_dir, database_url=settings.db.url, redis_url=None, need_redis=False) as (
        database_url,
        _,
    ):
        upgrade_database(database_url)
        built = asyncio.run(run(database_url))
    print(
        f"Rebuilt the uplift projection from {built.events:,} stored events "
        f"(committed up to {built.complete_at.isoformat() if built.complete_at else '-'}) "
        f"in {time.perf_counter() - started:.1f} s."
    )
    return 0


def _rules_schema(args: argparse.Namespace, settings: Settings) -> int:
    from service.rules import schema

    directory = Path(args.output) if args.output else settings.app.rules_dir / "schema"
    for path in schema.write(directory):
        print(path)
    return 0


def _db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from service.lib.db import upgrade_database
    from service.lib.embedded import embedded_servers

    with embedded_servers(settings.app.data_dir, database_url=settings.db.url, redis_url=None, need_redis=False) as (
        database_url,
        _,
    ):
        upgrade_database(database_url, args.revision)
    return 0


def _openapi(args: argparse.Namespace, settings: Settings) -> int:
    text = json.dumps(openapi_document(settings), indent=2, sort_keys=True) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def openapi_document(settings: Settings) -> dict[str, object]:
    """The OpenAPI document the service serves, built without connecting to anything."""
    from service.app import create_app
    from service.lib.settings import DatabaseSettings, RedisSettings

    offline = Settings(
        app=settings.app,
        db=DatabaseSettings(url="postgresql+asyncpg://offline/offline"),
        redis=RedisSettings(url="redis://offline"),
    )
    return create_app(offline).openapi_schema.to_schema()


def _load_or_report(directory: Path) -> RuleSet | None:
    """The rule set in ``directory``, or ``None`` after printing each error as ``path:line: message``."""
    from service.rules.loader import RuleSetError, load_rule_set

    try:
        return load_rule_set(directory)
    except RuleSetError as exc:
        _print_rule_errors(exc)
        return None


def _print_rule_errors(exc: Exception) -> None:
    for error in getattr(exc, "errors", [exc]):
        print(error, file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="delight", description="The Delight loyalty engine.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="apply migrations, load rules/ and serve HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(handler=_serve)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key; it is printed once, on the last line")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", required=True, help="comma-separated, e.g. events:write,customers:read")
    create.set_defaults(handler=_keys_create)
    listing = keys.add_parser("list", help="every key: id, name, scopes, created, last used, revoked")
    listing.set_defaults(handler=_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by its id (the 16 hex digits after dlk_)")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=_keys_revoke)

    console = commands.add_parser("console", help="the console in the browser").add_subparsers(
        dest="console_command", required=True
    )
    console_login = console.add_parser(
        "login", help="print a one-time link that signs in to the console with a key (good for 15 minutes)"
    )
    console_login.add_argument("key_id", help="the key's id (the 16 hex digits after dlk_; see `delight keys list`)")
    console_login.add_argument("--url", default="http://127.0.0.1:8000", help="where delight serve is reached")
    console_login.set_defaults(handler=_console_login)

    customers = commands.add_parser("customers", help="customers' personal data").add_subparsers(
        dest="customers_command", required=True
    )
    erase = customers.add_parser(
        "erase", help="erase a customer as DELETE /v1/customers/{id} does, for any id (also one no URL can hold)"
    )
    erase.add_argument("customer_id")
    erase.set_defaults(handler=_customers_erase)

    rules = commands.add_parser("rules", help="work with rule files").add_subparsers(
        dest="rules_command", required=True
    )
    check = rules.add_parser("check", help="check a rules directory; exit 1 with path:line: message per error")
    check.add_argument("dir", nargs="?")
    check.set_defaults(handler=_rules_check)

    backtest = rules.add_parser(
        "backtest", help="replay stored events against a rule set, writing nothing; counts per rule"
    )
    backtest.add_argument("dir", nargs="?")
    backtest.add_argument("--from", dest="start", required=True, help="first day, e.g. 2026-03-01 (shop time zone)")
    backtest.add_argument("--to", dest="end", required=True, help="last day, inclusive")
    backtest.add_argument("--format", choices=["table", "json"], default="table")
    backtest.set_defaults(handler=_rules_backtest)

    diff = rules.add_parser(
        "diff",
        help="replay stored events against a draft and the rule set in force, writing nothing; per rule, live "
        "against draft, and the customers who would gain or lose a surprise",
    )
    diff.add_argument("draft", help="a rules directory, or one campaign file (with the settings and catalog in force)")
    diff.add_argument("--from", dest="start", required=True, help="first day, e.g. 2026-03-01 (shop time zone)")
    diff.add_argument("--to", dest="end", required=True, help="last day, inclusive")
    diff.add_argument("--format", choices=["table", "json"], default="table")
    diff.set_defaults(handler=_rules_diff)

    schema = rules.add_parser("schema", help="write the JSON Schemas editors use to check rule files")
    schema.add_argument("--output", "-o", help="directory (default: RULES_DIR/schema)")
    schema.set_defaults(handler=_rules_schema)

    report = commands.add_parser("report", aliases=["reports"], help="reports").add_subparsers(
        dest="report_command", required=True
    )
    uplift = report.add_parser(
        "uplift", help="repeat purchase of treated against held-out customers, per rule, with intervals"
    )
    uplift.add_argument("--campaign", required=True)
    uplift.add_argument("--window-days", type=int, default=30, help="days after first exposure that count (1-365)")
    uplift.add_argument(
        "--target-uplift",
        type=float,
        default=0.02,
        help="an uplift in repeat rate (0.02 = 2 points): the plan says how many days of enrolment detect it",
    )
    whole = report.add_parser(
        "programme",
        help="everyone the surprise programme reaches against its holdout (programme_holdout), over 30/90/180 days",
    )
    for each in (uplift, whole):
        each.add_argument(
            "--cap-percentile",
            type=float,
            default=99.0,
            help="cap each customer's revenue at this percentile of the rule's for the capped figures (50-100)",
        )
        each.add_argument("--net-returns", action="store_true", help="take refunds in the window off revenue")
        each.add_argument("--from", dest="start", help="first day of first exposure, e.g. 2026-03-01 (shop time zone)")
        each.add_argument("--to", dest="end", help="last day of first exposure, inclusive")
        each.add_argument("--format", choices=["table", "json", "csv", "html"], default="table")
        each.add_argument(
            "--by",
            choices=["channel", "store", "new_returning", "spend_tier", "segment"],
            help="break every row down by this, each segment tested against the rest",
        )
        each.add_argument(
            "--spend-tiers", default="100,500", help="with --by spend_tier: the tiers' bounds, ascending (100,500)"
        )
        each.set_defaults(handler=_report_uplift)
    glance = report.add_parser(
        "campaigns", help="every campaign at a glance: status, customers, uplift, cost and return"
    )
    glance.add_argument("--window-days", type=int, default=30, help="days after first exposure that count (1-365)")
    glance.add_argument("--format", choices=["table", "json", "csv", "html"], default="table")
    glance.set_defaults(handler=_report_campaigns)
    rebuild = report.add_parser(
        "rebuild", help="rebuild the uplift projection from the stored events (servers may keep running)"
    )
    rebuild.set_defaults(handler=_reports_rebuild)

    jobs = commands.add_parser("jobs", help="housekeeping").add_subparsers(dest="jobs_command", required=True)
    run_jobs = jobs.add_parser(
        "run",
        help=(
            "expire awards and points, make the month partitions due and archive past retention, bring the uplift "
            "projection up to date; safe to run twice, or on two replicas"
        ),
    )
    run_jobs.set_defaults(handler=_jobs_run)

    db = commands.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    upgrade = db.add_parser("upgrade", help="apply migrations")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(handler=_db_upgrade)

    openapi = commands.add_parser("openapi", help="print the OpenAPI document the service serves")
    openapi.add_argument("--output", "-o")
    openapi.set_defaults(handler=_openapi)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"delight: {exc}", file=sys.stderr)
        return 2
    from service.lib.logging import configure_logging

    # Libraries' warnings (deprecations, a missing XDG_RUNTIME_DIR) are for their developers, not for someone
    # creating a key; `python -W default` or PYTHONWARNINGS shows them again.
    if not sys.warnoptions:
        warnings.simplefilter("ignore")
    # A one-shot command says what it did on stdout; its info lines (servers starting, migrations) are noise.
    level = settings.app.log_level or ("INFO" if args.handler is _serve else "WARNING")
    configure_logging(level, json=settings.app.log_json)
    return int(args.handler(args, settings))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
