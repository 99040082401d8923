"""The rule set in force, and how it changes without downtime.

A process starts with the rule set in its rules directory and makes it the
active one in the database. It then keeps in step three ways:

- ``POST /v1/rules/reload`` and the file watcher load the directory again; a
  set with any error is refused whole and the one in force stays (so is a set
  that lowers ``programme_holdout`` without ``programme_holdout_release``, at
  start-up too: the process then runs the set in force);
- a reload publishes the new version on Redis, and every other process
  (workers and replicas on the same database) adopts it within milliseconds;
- every process also polls the database for the active version, so replicas
  converge within ``POLL_SECONDS`` even when Redis is down.

Other processes load the active version from the text stored with it, not
from their own disks, so every replica runs exactly the same rules.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.audit import repository as audit
from service.lib.db import DATABASE_ERRORS, transaction
from service.lib.logging import get_logger
from service.lib.tasks import stop_if_cancelled
from service.rules import repository
from service.rules.loader import (
    SETTINGS_FILE,
    RuleSetError,
    check_programme_holdout,
    load_rule_set,
    load_rule_set_texts,
    programme_share,
)
from service.rules.ruleset import RuleSet

log = get_logger(__name__)

CHANNEL = "delight:rules"
POLL_SECONDS = 1.0
WATCH_SECONDS = 1.0

Snapshot = tuple[tuple[str, int, int], ...]


def snapshot(directory: Path) -> Snapshot:
    """Names, sizes and modification times of the rule files: enough to notice an edit."""
    try:
        entries = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir() if p.is_file()]
    except OSError:
        return ()
    return tuple(sorted(e for e in entries if e[0].endswith((".yaml", ".yml"))))


class RuleRegistry:
    def __init__(
        self,
        rules_dir: Path,
        initial: RuleSet,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: Redis | None,
        *,
        sync: bool = True,
    ) -> None:
        self.rules_dir = rules_dir
        self.current = initial
        self._sessions = sessionmaker
        self._redis = redis
        self._sync = sync
        self._lock = asyncio.Lock()
        self._snapshot = snapshot(rules_dir)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        async with self._sessions() as session:
            in_force = await repository.active(session)
        try:
            if in_force is not None and in_force[0] != self.current.version:
                check_programme_holdout(self.current, programme_share(in_force[1]), self._settings_path)
        except RuleSetError as exc:  # the set in force stays, as for a refused reload
            assert in_force is not None
            await self._refused(exc, "startup", in_force[0])
            self.current = await asyncio.to_thread(load_rule_set_texts, in_force[1], self.rules_dir)
        else:
            await self._activate(self.current, "startup")
        if self._sync:
            self._tasks = [
                asyncio.create_task(self._poll(), name="rules-poll"),
                asyncio.create_task(self._watch(), name="rules-watch"),
            ]
            if self._redis is not None:
                self._tasks.append(asyncio.create_task(self._listen(self._redis), name="rules-listen"))

    @property
    def _settings_path(self) -> str:
        return str(self.rules_dir / SETTINGS_FILE)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def reload(self, actor: str) -> tuple[RuleSet, RuleSet]:
        """Load the rules directory again and put it in force; ``(previous, new)``. Raises ``RuleSetError``."""
        async with self._lock:
            before = snapshot(self.rules_dir)
            previous = self.current
            try:
                new = await asyncio.to_thread(load_rule_set, self.rules_dir)
                check_programme_holdout(new, previous.settings.programme_holdout, self._settings_path)
            except RuleSetError as exc:
                await self._refused(exc, actor, previous.version)
                raise
            await self._activate(new, actor)
            self.current = new
            self._snapshot = before
        log.info("rules_reloaded", version=new.version, previous=previous.version, actor=actor)
        return previous, new

    async def follow(self) -> None:
        """Adopt the version in force in the database, if it is not ours."""
        async with self._sessions() as session:
            version = await repository.active_version(session)
            if version is None or version == self.current.version:
                return
            active = await repository.active(session)
        if active is None:
            return
        async with self._lock:
            version, files = active
            if version == self.current.version:
                return
            try:
                adopted = await asyncio.to_thread(load_rule_set_texts, files, self.rules_dir)
            except RuleSetError as exc:  # written by another version of Delight that accepts more
                log.error("rules_follow_failed", version=version, errors=[str(e) for e in exc.errors])
                return
            previous, self.current = self.current, adopted
        log.info("rules_followed", version=adopted.version, previous=previous.version)

    async def _activate(self, rule_set: RuleSet, actor: str) -> None:
        async with transaction(self._sessions) as session:
            await repository.activate(session, rule_set, actor)
        if self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.publish(CHANNEL, rule_set.version)

    async def _refused(self, exc: RuleSetError, actor: str, version_in_force: str) -> None:
        """Log a refused rule set and record it in the audit log, in a transaction of its own (a refusal changes
        nothing else), so the console can show its errors. The refusal stands even if its record cannot be written."""
        errors = [str(e) for e in exc.errors]
        log.error("rules_refused", errors=errors, version_in_force=version_in_force, actor=actor)
        try:
            async with transaction(self._sessions) as session:
                await audit.record(
                    session, actor, "rules.refused", None, {"errors": errors, "version_in_force": version_in_force}
                )
        except DATABASE_ERRORS as failure:
            stop_if_cancelled()
            log.warning("rules_refusal_not_recorded", error=type(failure).__name__)

    async def _listen(self, redis: Redis) -> None:
        while True:
            stop_if_cancelled()  # a cancellation some library swallowed still ends the loop
            try:
                async with redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            await self.follow()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, SQLAlchemyError) as exc:
                stop_if_cancelled()
                log.warning("rules_listen_interrupted", error=type(exc).__name__)
                await asyncio.sleep(1.0)

    async def _poll(self) -> None:
        while True:
            stop_if_cancelled()  # a cancellation some library swallowed still ends the loop
            await asyncio.sleep(POLL_SECONDS)
            try:
                await self.follow()
            except DATABASE_ERRORS as exc:
                stop_if_cancelled()
                log.warning("rules_poll_failed", error=type(exc).__name__)

    async def _watch(self) -> None:
        while True:
            stop_if_cancelled()  # a cancellation some library swallowed still ends the loop
            await asyncio.sleep(WATCH_SECONDS)
            current = await asyncio.to_thread(snapshot, self.rules_dir)
            if current == self._snapshot:
                continue
            self._snapshot = current
            try:
                await self.reload("file watcher")
            except RuleSetError:
                pass  # logged and audited by the reload; the set in force stays until the next edit
            except DATABASE_ERRORS as exc:
                stop_if_cancelled()
                log.warning("rules_reload_failed", error=type(exc).__name__)
            except Exception:  # a defect in loading must not end the watching: the next edit is tried again
                log.exception("rules_reload_failed", error="unexpected")
