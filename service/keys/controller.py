"""``/v1/keys``: create, list and revoke API keys (scope ``keys:admin``). Every change is audited."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter
from msgspec import Meta, Struct
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.keys import repository
from service.keys.guards import actor_of, requires
from service.keys.scopes import ALL, KEYS_ADMIN
from service.keys.service import InvalidScopesError, create_key, forget, revoke_key
from service.lib.db import transaction
from service.lib.errors import FieldError, NotFoundError, ValidationError
from service.lib.openapi import API_KEY, problem_responses
from service.lib.validation import strict_body

KeyId = Annotated[str, Parameter(pattern=r"^[0-9a-f]{16}$", description="The key id: 16 hex digits.")]


class KeyIn(Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]+$")]
    scopes: Annotated[list[str], Meta(min_length=1, max_length=len(ALL), description=f"Of: {', '.join(ALL)}.")]


class KeyOut(Struct):
    key_id: str
    name: str
    scopes: list[str]
    created_at: dt.datetime
    last_used_at: dt.datetime | None  # to the minute
    revoked_at: dt.datetime | None


class NewKeyOut(Struct):
    key_id: str
    name: str
    scopes: list[str]
    key: Annotated[str, Meta(description="Shown once: only its hash is stored.")]


class KeyList(Struct):
    keys: list[KeyOut]


def _out(row: Any) -> KeyOut:
    return KeyOut(
        key_id=row.key_id,
        name=row.name,
        scopes=list(row.scopes),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class KeysController(Controller):
    path = "/v1/keys"
    tags = ["keys"]
    security = [API_KEY]
    guards = [requires(KEYS_ADMIN)]

    @get(
        "/",
        operation_id="listKeys",
        summary="Every API key: name, scopes, when created, last used (to the minute) and revoked",
        responses=problem_responses(401, 403, 503),
    )
    async def list_keys(self, db_session: NamedDependency[AsyncSession]) -> KeyList:
        return KeyList(keys=[_out(r) for r in await repository.all_keys(db_session)])

    @post(
        "/",
        operation_id="createKey",
        summary="Create an API key; the key is in the response once and stored only as a hash",
        status_code=201,
        responses=problem_responses(400, 401, 403, 422, 503),
    )
    async def create(
        self, request: Request[Any, Any, Any], data: JSONBody[KeyIn], db_session: NamedDependency[AsyncSession]
    ) -> NewKeyOut:
        body = strict_body(request, KeyIn)
        try:
            key_id, key = await create_key(db_session, body.name, body.scopes, actor=actor_of(request))
        except InvalidScopesError as exc:
            raise ValidationError(str(exc), errors=[FieldError("scopes", str(exc))]) from None
        return NewKeyOut(key_id=key_id, name=body.name, scopes=sorted(set(body.scopes)), key=key)

    @delete(
        "/{key_id:str}",
        operation_id="revokeKey",
        summary="Revoke an API key: refused at once on every replica",
        description="Revoking a key that is already revoked answers 200 again; an unknown key 404.",
        status_code=200,
        responses=problem_responses(400, 401, 403, 404, 503),
    )
    async def revoke(
        self,
        request: Request[Any, Any, Any],
        key_id: KeyId,
        sessionmaker: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> KeyOut:
        async with transaction(sessionmaker) as session:
            revoked = await revoke_key(session, key_id, actor=actor_of(request))
            if not revoked and not await repository.known(session, key_id):
                raise NotFoundError(f"no key {key_id!r}")
        # after commit: a reload of the cache sees the revocation
        if not await forget(request.app.state.redis, key_id):
            request.app.state.key_verifier.distrust_cache()
        async with sessionmaker() as session:
            row = next(r for r in await repository.all_keys(session) if r.key_id == key_id)
        return _out(row)
