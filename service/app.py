"""The application factory: settings in, a Litestar app wired with every domain out."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from litestar import Litestar, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import HttpMethod, MediaType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from litestar.types import Receive, Scope, Send
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.audit.controller import AuditController
from service.awards.controller import RedemptionController
from service.awards.expiry import run_periodically
from service.console import console_router
from service.customers.controller import CustomerController
from service.events.controller import EventController
from service.events.ingest import EventIngest
from service.health.controller import HealthController
from service.health.metrics import MetricsController
from service.keys.controller import KeysController
from service.keys.limits import RateLimiter
from service.keys.service import KeyVerifier, keep_revocations
from service.lib.db import create_engine, create_sessionmaker, transaction
from service.lib.errors import ServiceUnavailableError
from service.lib.http import EXCEPTION_HANDLERS, RequestContextMiddleware
from service.lib.logging import configure_logging, get_logger
from service.lib.openapi import finish as finish_openapi
from service.lib.redis import close as close_redis
from service.lib.redis import connect as connect_redis
from service.lib.replica import ReportsDatabase, reports_database
from service.lib.resp import LeanRedis
from service.lib.settings import Settings, SettingsError
from service.projection.worker import run_projector
from service.reports.controller import ExportsController, UpliftController
from service.reports.redemptions import ReportsController
from service.rules.controller import RulesController
from service.rules.loader import load_rule_set
from service.rules.registry import RuleRegistry
from service.rules.ruleset import RuleSet
from service.webhooks.controller import WebhooksController
from service.webhooks.delivery import run_delivery

log = get_logger(__name__)
SHUTDOWN_WAIT = 10.0  # seconds shutdown waits for the background loops to end once cancelled

API_VERSION = "1.0.0"


async def provide_db_session(state: State) -> AsyncIterator[AsyncSession]:
    async with transaction(state.sessionmaker) as session:
        yield session


def provide_sessionmaker(state: State) -> async_sessionmaker[AsyncSession]:
    maker: async_sessionmaker[AsyncSession] = state.sessionmaker
    return maker


def provide_reports_db(state: State) -> ReportsDatabase:
    reports_db: ReportsDatabase = state.reports_db
    return reports_db


def provide_rule_set(state: State) -> RuleSet:
    registry: RuleRegistry | None = state.get("registry")
    if registry is None:
        raise ServiceUnavailableError("no rule set is loaded")
    return registry.current


def provide_registry(state: State) -> RuleRegistry:
    registry: RuleRegistry = state.registry
    return registry


STATIC_DIR = Path(__file__).parent / "static"
STATIC_PATH = "/static"


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Delight",
        version=API_VERSION,
        description=(
            "The surprise-and-delight loyalty engine. Tills and web shops post events and learn at once "
            "whether the customer won something. Errors are RFC 9457 problem+json documents."
        ),
        path="/schema",
        # Everything the docs page loads comes from this server: by default Scalar's script, a stylesheet, an
        # icon and web fonts come from CDNs, and the page stays blank on a network with no way out.
        render_plugins=[
            ScalarRenderPlugin(
                js_url=f"{STATIC_PATH}/scalar/standalone.js",
                css_url="data:text/css,",  # the standalone script carries its own styles
                favicon='<link rel="icon" href="data:,">',
                options={"withDefaultFonts": False},
            )
        ],
        components=Components(
            security_schemes={
                "apiKey": SecurityScheme(
                    type="http", scheme="bearer", description="An API key from `delight keys create`."
                )
            }
        ),
        use_handler_docstrings=False,
    )


class DelightApp(Litestar):
    """Litestar with the request context around everything, unmatched routes included.

    Litestar runs middleware only for matched routes; wrapping the whole app
    gives 404s and 405s a request id and a log line too. Well-formed events
    take a shorter way than Litestar's (``service.events.ingest``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._with_request_context = RequestContextMiddleware(EventIngest(self, super().__call__))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        await self._with_request_context(scope, receive, send)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    configure_logging(settings.app.log_level or "INFO", json=settings.app.log_json)
    database_url, redis_url = settings.db.url, settings.redis.url
    if database_url is None or redis_url is None:
        raise SettingsError(
            "DELIGHT_DATABASE_URL and DELIGHT_REDIS_URL must be set; `delight serve` sets them for embedded servers"
        )
    # Load rules before anything listens: a rule set with errors stops start-up.
    rule_set = load_rule_set(settings.app.rules_dir)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = create_engine(database_url, settings.db)
        sessionmaker = create_sessionmaker(engine)
        reports_db = reports_database(engine, sessionmaker, settings.db)
        redis = connect_redis(redis_url, timeout=1.0)
        lean_redis = LeanRedis.for_client(redis, timeout=1.0)
        limiter = RateLimiter(redis, settings.app.rate_limit)
        registry = RuleRegistry(settings.app.rules_dir, rule_set, sessionmaker, redis, sync=settings.app.rules_sync)
        app.state.update(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            reports_db=reports_db,
            redis=redis,
            key_verifier=KeyVerifier(sessionmaker, redis, limiter, lean_redis),
            rate_limiter=limiter,
            registry=registry,
        )
        await registry.start()
        background = [
            asyncio.create_task(run_delivery(sessionmaker, lambda: registry.current), name="webhook-delivery"),
            asyncio.create_task(keep_revocations(sessionmaker, redis, app.state.key_verifier), name="revocations"),
        ]
        if settings.app.projector:
            background.append(asyncio.create_task(run_projector(database_url), name="projector"))
        jobs_engine = None
        if settings.app.jobs_every > 0:
            # Its own connection, without the requests' time bound: an expiry run over every customer may take
            # longer than any request should.
            jobs_engine = create_engine(database_url, replace(settings.db, pool_size=1, max_overflow=0, timeout=None))
            background.append(
                asyncio.create_task(
                    run_periodically(
                        jobs_engine, lambda: registry.current, settings.app.jobs_every, settings.app.retention_days
                    ),
                    name="jobs",
                )
            )
        # What start-up built (modules, the rule set, SQL compiled once) lives as
        # long as the process: keep it out of the garbage collector's full passes,
        # which otherwise walk all of it and stall requests in flight.
        gc.collect()
        gc.freeze()
        log.info(
            "started", rules_version=rule_set.version, campaigns=len(rule_set.campaigns), rules=rule_set.rule_count
        )
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            # Each loop ends at its next step once cancelled (``service.lib.tasks``); should one not, shutdown goes on
            # without it rather than wait for ever.
            _, stuck = await asyncio.wait(background, timeout=SHUTDOWN_WAIT)
            for task in stuck:
                log.error("background_task_did_not_stop", task=task.get_name())
            await registry.stop()
            await close_redis(redis)
            if lean_redis is not None:
                await lean_redis.close()
            await reports_db.close()
            await engine.dispose()
            if jobs_engine is not None:
                await jobs_engine.dispose()

    app = DelightApp(
        route_handlers=[
            EventController,
            CustomerController,
            RedemptionController,
            RulesController,
            ReportsController,
            UpliftController,
            ExportsController,
            KeysController,
            AuditController,
            WebhooksController,
            HealthController,
            MetricsController,
            console_router(),
            create_static_files_router(STATIC_PATH, directories=[STATIC_DIR], name="static"),
        ],
        dependencies={
            "db_session": Provide(provide_db_session),
            "sessionmaker": Provide(provide_sessionmaker, sync_to_thread=False),
            "reports_db": Provide(provide_reports_db, sync_to_thread=False),
            "rule_set": Provide(provide_rule_set, sync_to_thread=False),
            "registry": Provide(provide_registry, sync_to_thread=False),
        },
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=openapi_config(),
        request_max_body_size=settings.app.max_body_bytes,
        logging_config=None,
        debug=False,
    )
    finish_openapi(app.openapi_schema)
    allow_every_method(app)
    return app


def allow_every_method(app: Litestar) -> None:
    """Answer ``OPTIONS`` with every method of the path.

    Litestar 2 builds a path's ``OPTIONS`` handler with the first handler
    registered on it and keeps it when the others join, so ``OPTIONS
    /v1/keys`` said ``POST`` alone (https://github.com/litestar-org/litestar/issues/4169,
    fixed in Litestar 3). Each such handler is pointed at its route's own methods.
    """
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if handler.handler_name == "options_handler" and HttpMethod.OPTIONS in handler.http_methods:
                handler._fn = _options_handler(", ".join(sorted(route.methods)))  # type: ignore[assignment]


def _options_handler(allow: str) -> Callable[[Scope], Response[None]]:
    def options_handler(scope: Scope) -> Response[None]:
        return Response(content=None, status_code=204, headers={"Allow": allow}, media_type=MediaType.TEXT)

    return options_handler
