"""Route guards: a valid ``Authorization: Bearer`` key with the route's scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers.base import BaseRouteHandler

from service.keys.limits import RateLimiter
from service.keys.service import KeyVerifier, Principal
from service.lib.errors import ForbiddenError, UnauthorizedError

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


async def authorize(state: State, header: str, scope: str) -> Principal:
    """The holder of the key in an ``Authorization`` header, counted against its rate limit and holding
    ``scope``; raises the 401, 403 or 429 to answer otherwise."""
    scheme, _sep, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("send an API key as 'Authorization: Bearer <key>'")
    verifier: KeyVerifier = state.key_verifier
    principal = await verifier.verify(token.strip())
    if principal is None:
        raise UnauthorizedError("the API key is not valid")
    # Every request of a valid key counts, whatever its scope: the key check
    # usually counted it already, in the same Redis call.
    limiter: RateLimiter = state.rate_limiter
    if principal.counted is None:
        await limiter.hit(principal.key_id)
    else:
        limiter.judge(principal.counted, principal.counted_at)
    if scope not in principal.scopes:
        raise ForbiddenError(f"this needs the scope {scope!r}")
    return principal


def requires(scope: str) -> Guard:
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal: Principal | None = connection.state.get("principal")
        if principal is None:
            header = connection.headers.get("authorization", "")
            connection.state.principal = await authorize(connection.app.state, header, scope)
        elif scope not in principal.scopes:  # authorised (and counted) by the direct event path already
            raise ForbiddenError(f"this needs the scope {scope!r}")

    guard.__name__ = "requires_" + scope.replace(":", "_")
    return guard


def actor_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """Who is making this request, for the audit log: ``key <key id>`` once a guard has let it through."""
    principal = getattr(connection.state, "principal", None)
    return f"key {principal.key_id}" if principal is not None else "api"
