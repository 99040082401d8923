"""Real replicas for tests: ``delight serve`` processes on free loopback ports, sharing one PostgreSQL and Redis.

Each replica has its own data directory and rules directory (several may be
given the same one) and writes its stdout and stderr to ``<name>.log`` next to
its data directory. ``running`` starts them all, waits until each answers
``/health/ready`` and stops them on the way out; it prints the end of every log
then, which pytest shows when the test failed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
DELIGHT = str(Path(sys.executable).parent / "delight")
START_TIMEOUT = 90
STOP_TIMEOUT = 30
TAIL_LINES = 30
IDLE_CONNECTION_SECONDS = 1.0
"""How long a test's client keeps an idle connection to a replica. uvicorn closes one idle for 5 s, httpx keeps one
5 s by default: a request sent on a connection just as the server closes it fails with a read error that says
nothing about the service, so clients under test let theirs go well before."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Replica:
    name: str
    base: str
    """``http://127.0.0.1:<port>``."""
    rules: Path
    log: Path
    process: subprocess.Popen[bytes]

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The end of what the process wrote, to say why a test failed."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])


def tails(replicas: Sequence[Replica], lines: int = TAIL_LINES) -> str:
    """The end of every replica's log, each under its name and address."""
    return "\n".join(
        f"--- replica {r.name} ({r.base}), exit code {r.process.poll()}:\n{r.tail(lines)}" for r in replicas
    )


def replica_env(
    database_url: str, redis_url: str, rules: Path, data: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """This process's environment without its own ``DELIGHT_*`` settings, plus the replica's.

    ``PYTHONPATH`` starts with this checkout, so the replica runs the code under test even where the
    ``delight`` command was installed from another checkout (a git worktree next to the one installed).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIGHT_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(
        DELIGHT_DATABASE_URL=database_url,
        DELIGHT_REDIS_URL=redis_url,
        DELIGHT_RULES_DIR=str(rules),
        DELIGHT_DATA_DIR=str(data),
        DELIGHT_LOG_JSON="true",
    )
    env.update(extra or {})
    return env


def _start(
    name: str, rules: Path, work: Path, database_url: str, redis_url: str, env: Mapping[str, str] | None, workers: int
) -> Replica:
    data = work / f"data-{name}"
    data.mkdir(parents=True)
    log = work / f"{name}.log"
    port = free_port()
    with log.open("wb") as out:  # the child holds its own copy of the file
        process = subprocess.Popen(
            [DELIGHT, "serve", "--port", str(port), "--workers", str(workers)],
            env=replica_env(database_url, redis_url, rules, data, env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Replica(name, f"http://127.0.0.1:{port}", rules, log, process)


def _wait_ready(replica: Replica, deadline: float) -> None:
    while True:
        assert replica.process.poll() is None, f"replica {replica.name} exited\n{tails([replica])}"
        try:
            if httpx.get(f"{replica.base}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"replica {replica.name} did not become ready\n{tails([replica])}"
        time.sleep(0.2)


def _stop(replicas: Sequence[Replica]) -> None:
    for replica in replicas:
        if replica.process.poll() is None:
            replica.process.send_signal(signal.SIGTERM)
    for replica in replicas:
        try:
            replica.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            replica.process.kill()
            replica.process.wait()


@contextmanager
def running(
    rules: Sequence[Path],
    work: Path,
    database_url: str,
    redis_url: str,
    *,
    env: Mapping[str, str] | None = None,
    workers: int = 1,
) -> Iterator[list[Replica]]:
    """One ready replica per rules directory (the same directory may be given several times), named ``a``, ``b``…

    ``env`` adds ``DELIGHT_*`` settings to each one's environment.
    """
    started: list[Replica] = []
    try:
        for i, directory in enumerate(rules):
            started.append(_start(chr(ord("a") + i), directory, work, database_url, redis_url, env, workers))
        deadline = time.monotonic() + START_TIMEOUT
        for replica in started:
            _wait_ready(replica, deadline)
        yield started
    finally:
        _stop(started)
        print(tails(started))  # captured: pytest shows it when the test failed
