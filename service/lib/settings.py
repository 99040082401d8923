"""Typed settings read from ``DELIGHT_*`` environment variables, once, at start-up."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote


class SettingsError(ValueError):
    """An environment variable holds a value Delight cannot use."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


def _flag(raw: str | None) -> bool | None:
    return None if not raw else raw.lower() in {"1", "true", "yes"}


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str | None = None
    """A ``postgresql+asyncpg://`` URL; unset means an embedded PostgreSQL under the data dir."""
    pool_size: int = 20
    """Connections each worker keeps open; requests beyond them wait for one."""
    max_overflow: int = 0
    """Extra connections a worker may open under a burst, and close again after each use."""
    timeout: float | None = None
    """Seconds a request may wait on the database for each step (a pooled connection, a new connection, a
    statement) before it is answered 503; ``None`` (the command line's tools) waits as long as it takes."""
    reports_url: str | None = None
    """A ``postgresql+asyncpg://`` URL of a hot standby of ``url`` that reports, exports, back-tests and the
    console's read-only pages read; unset means they read the primary too."""
    reports_max_lag: float = 30.0
    """Seconds a read on the standby waits for it to replay what the primary had committed when it was asked;
    past them it is refused (503), naming how far behind the standby is."""


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str | None = None
    """A ``redis://``, ``rediss://``, ``unix://`` or ``redis+sentinel://`` URL (``parse_sentinel_url``); unset means
    an embedded Redis under the data dir."""


REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")
SENTINEL_PORT = 26379
SENTINEL_FORM = "redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]"
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")


@dataclass(frozen=True, slots=True)
class SentinelURL:
    """A ``redis+sentinel://`` URL taken apart."""

    sentinels: tuple[tuple[str, int], ...]
    """The Sentinels' addresses, asked in this order until one names the master."""
    service: str
    """The name the Sentinels monitor the master by (``sentinel monitor <service> ...``)."""
    db: int = 0
    username: str | None = None
    password: str | None = None
    """The master's credentials (its replicas', once one is promoted, must be the same)."""
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    """The Sentinels' own credentials, when they ask for some (``requirepass`` in their configuration)."""


def parse_sentinel_url(url: str) -> SentinelURL:
    """``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``, with
    ``?sentinel_username=...&sentinel_password=...`` when the Sentinels ask for credentials of their own.

    The form redisvl and Prefect read too. A Sentinel's port is 26379 unless given; an IPv6 address goes in
    brackets. The credentials before ``@`` are the master's, as in a ``redis://`` URL. Raises ``SettingsError``
    saying what is wrong, without the password.
    """
    scheme, separator, rest = url.partition("://")
    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    shown = f"{scheme}://{'***@' if at else ''}{hosts}{'/' if separator and '/' in rest else ''}{path}"

    def refuse(problem: str) -> SettingsError:
        return SettingsError(f"the Sentinel URL {shown!r} {problem}; the form is {SENTINEL_FORM}")

    if scheme.lower() != "redis+sentinel" or not separator:
        raise refuse("is not a redis+sentinel:// URL")
    if fragment:
        raise refuse("has a fragment (#...)")
    if not hosts:
        raise refuse("names no Sentinel")
    sentinels = tuple(_sentinel_address(part, refuse) for part in hosts.split(","))
    parts = path.split("/")
    if not parts[0]:
        raise refuse("names no master: the service name the Sentinels monitor it by goes after the first /")
    if len(parts) > 2:
        raise refuse("has more after the database number")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise refuse(f"has a database {parts[1]!r} that is not a number")
        db = int(parts[1])
    options = parse_qs(query, keep_blank_values=True) if query else {}
    unknown = sorted(set(options) - set(SENTINEL_OPTIONS))
    if unknown:
        raise refuse(f"has options {', '.join(unknown)}; it takes only {' and '.join(SENTINEL_OPTIONS)}")
    username, colon, password = userinfo.partition(":")
    return SentinelURL(
        sentinels=sentinels,
        service=unquote(parts[0]),
        db=db,
        username=unquote(username) or None,
        password=unquote(password) if colon and password else None,
        sentinel_username=options.get("sentinel_username", [""])[-1] or None,
        sentinel_password=options.get("sentinel_password", [""])[-1] or None,
    )


def _sentinel_address(part: str, refuse: Callable[[str], SettingsError]) -> tuple[str, int]:
    host, port = part, ""
    if not part:
        raise refuse("has an empty Sentinel address between commas")
    if part.startswith("["):
        host, bracket, after = part[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise refuse(f"has a Sentinel address {part!r} that is not [IPv6 address]:port")
        port = after[1:]
    elif ":" in part:
        host, _, port = part.rpartition(":")
    if not host or (":" in host and not part.startswith("[")):
        raise refuse(f"has a Sentinel address {part!r} that is not host:port")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise refuse(f"has a Sentinel port {port!r} that is not a port number")
    return host, int(port) if port else SENTINEL_PORT


def check_redis_url(url: str) -> None:
    """Raise ``SettingsError`` unless ``url`` is one Delight can connect with."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in REDIS_SCHEMES:
        raise SettingsError("DELIGHT_REDIS_URL must be a redis://, rediss://, unix:// or redis+sentinel:// URL")
    if scheme == "redis+sentinel":
        try:
            parse_sentinel_url(url)
        except SettingsError as exc:
            raise SettingsError(f"DELIGHT_REDIS_URL: {exc}") from None


@dataclass(frozen=True, slots=True)
class AppSettings:
    rules_dir: Path = Path("rules")
    """Where the campaign files, ``catalog.yaml`` and ``settings.yaml`` live."""
    data_dir: Path = Path(".delight")
    """Where the embedded PostgreSQL and Redis keep their data."""
    log_level: str | None = None
    """The lowest level that is logged; unset means ``INFO`` for ``delight serve`` and ``WARNING`` for the
    command line's other commands, which say what they did on stdout."""
    log_json: bool | None = None
    """JSON log lines; unset means JSON unless stderr is a terminal."""
    rules_sync: bool = True
    """Watch the rules directory and follow reloads made on other replicas."""
    jobs_every: float = 3600.0
    """Seconds between runs of the expiry job inside the service; 0 turns it off."""
    rate_limit: int = 6000
    """Requests per minute one API key may make (counted in Redis across replicas); 0 turns it off."""
    max_body_bytes: int = 5 * 1024 * 1024
    """The largest request body accepted (413 above it); a full batch of 1000 events fits easily."""
    projector: bool = True
    """Apply committed events to the uplift projection from this process (one process at a time does)."""
    header_timeout: float = 10.0
    """Seconds a client has to send a request's line and headers (``service.lib.server``)."""
    body_timeout: float = 30.0
    """Seconds a client has to send a request's body once its headers are in."""
    max_connections: int = 1000
    """Connections one server process holds at once; more are answered 503 at once."""
    console_idle_minutes: int = 30
    """A console session left this long without a request ends."""
    console_secure_cookies: bool | None = None
    """Mark the console's cookies ``Secure``; unset means when the request came over TLS. Set it behind a proxy
    that ends TLS."""
    retention_days: int = 0
    """Events older than this many days are refused, and the jobs archive each month of events once all of it is
    that old: its payloads and its ids go, the figures stay (migration 0022). 0 keeps everything."""


@dataclass(frozen=True, slots=True)
class Settings:
    app: AppSettings = field(default_factory=AppSettings)
    db: DatabaseSettings = field(default_factory=DatabaseSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        db_url = env.get("DELIGHT_DATABASE_URL") or None
        if db_url is not None and not db_url.startswith("postgresql+asyncpg://"):
            raise SettingsError("DELIGHT_DATABASE_URL must be a postgresql+asyncpg:// URL")
        redis_url = env.get("DELIGHT_REDIS_URL") or None
        if redis_url is not None:
            check_redis_url(redis_url)
        reports_url = env.get("DELIGHT_REPORTS_DATABASE_URL") or None
        if reports_url is not None and not reports_url.startswith("postgresql+asyncpg://"):
            raise SettingsError("DELIGHT_REPORTS_DATABASE_URL must be a postgresql+asyncpg:// URL")
        if reports_url is not None and db_url is None:
            raise SettingsError(
                "DELIGHT_REPORTS_DATABASE_URL needs DELIGHT_DATABASE_URL: it names a standby of that server, "
                "and the embedded one has none"
            )
        for part in (env.get("DELIGHT_WEBHOOK_ALLOW") or "").split(","):
            try:
                if part.strip():
                    ipaddress.ip_network(part.strip(), strict=False)
            except ValueError:
                raise SettingsError(
                    f"DELIGHT_WEBHOOK_ALLOW must list addresses or CIDR ranges, comma-separated; {part.strip()!r} is "
                    "neither"
                ) from None
        retention_days = _int(env, "DELIGHT_RETENTION_DAYS", 0)
        if not 0 <= retention_days <= 36500:
            raise SettingsError(
                f"DELIGHT_RETENTION_DAYS must be 0 (keep everything) or a number of days up to 36500, got "
                f"{retention_days}"
            )
        return cls(
            app=AppSettings(
                rules_dir=Path(env.get("DELIGHT_RULES_DIR") or "rules"),
                data_dir=Path(env.get("DELIGHT_DATA_DIR") or ".delight"),
                log_level=(env.get("DELIGHT_LOG_LEVEL") or "").upper() or None,
                log_json=_flag(env.get("DELIGHT_LOG_JSON")),
                rules_sync=(env.get("DELIGHT_RULES_SYNC") or "true").lower() not in {"0", "false", "no"},
                jobs_every=float(_int(env, "DELIGHT_JOBS_EVERY", 3600)),
                rate_limit=_int(env, "DELIGHT_RATE_LIMIT", 6000),
                max_body_bytes=_int(env, "DELIGHT_MAX_BODY_BYTES", 5 * 1024 * 1024),
                projector=(env.get("DELIGHT_PROJECTOR") or "true").lower() not in {"0", "false", "no"},
                header_timeout=float(_int(env, "DELIGHT_HEADER_TIMEOUT", 10)),
                body_timeout=float(_int(env, "DELIGHT_BODY_TIMEOUT", 30)),
                max_connections=_int(env, "DELIGHT_MAX_CONNECTIONS", 1000),
                console_idle_minutes=max(_int(env, "DELIGHT_CONSOLE_IDLE_MINUTES", 30), 1),
                console_secure_cookies=_flag(env.get("DELIGHT_CONSOLE_SECURE_COOKIES")),
                retention_days=retention_days,
            ),
            db=DatabaseSettings(
                url=db_url,
                pool_size=_int(env, "DELIGHT_DB_POOL_SIZE", 20),
                max_overflow=_int(env, "DELIGHT_DB_MAX_OVERFLOW", 0),
                timeout=float(_int(env, "DELIGHT_DB_TIMEOUT", 10)) or None,
                reports_url=reports_url,
                reports_max_lag=float(max(_int(env, "DELIGHT_REPORTS_MAX_LAG_SECONDS", 30), 1)),
            ),
            redis=RedisSettings(url=redis_url),
        )
