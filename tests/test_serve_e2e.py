"""``delight serve`` as a newcomer runs it: embedded servers, migrations, the demo rules, the README's purchase."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from service.lib.embedded import EmbeddedPostgres, memory_available, shared_buffers, start_postgres, start_redis

ROOT = Path(__file__).resolve().parent.parent
DELIGHT = str(Path(sys.executable).parent / "delight")
START_TIMEOUT = 90
CONNECTIONS = 20  # per worker


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(data_dir: Path, rules_dir: Path = ROOT / "rules") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIGHT_")}
    env.update(DELIGHT_DATA_DIR=str(data_dir), DELIGHT_RULES_DIR=str(rules_dir), DELIGHT_LOG_JSON="true")
    return env


def readme_walkthrough() -> str:
    """The shell commands of the README's walk-through ("Win something"), in order, as a newcomer pastes them."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Win something") : readme.index("## Using your own")]
    return "\n".join(re.findall(r"```sh\n(.*?)```", section, re.S))


def readme_purchase(occurred_at: str = "2026-11-20T10:15:00Z") -> dict[str, object]:
    """The walk-through's first purchase, made at ``occurred_at``."""
    match = re.search(r"<<EOF\n(\{\"event_id\".*?\})\nEOF", readme_walkthrough())
    assert match, "README lost its example purchase"
    event: dict[str, object] = json.loads(match.group(1).replace("$NOW", occurred_at))
    return event


def _postgres_processes(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(data_dir) in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, subprocess.Popen[bytes], Path]]:
    data_dir = tmp_path_factory.mktemp("delight-data")
    env = _env(data_dir)
    # short limits on slow clients, so that the tests of them take seconds
    env.update(DELIGHT_HEADER_TIMEOUT="2", DELIGHT_BODY_TIMEOUT="2", DELIGHT_MAX_CONNECTIONS=str(CONNECTIONS))
    created = subprocess.run(
        [DELIGHT, "keys", "create", "--name", "e2e", "--scopes", "events:write,customers:read,rules:admin"],
        env=env,
        capture_output=True,
        timeout=START_TIMEOUT,
        check=True,
    )
    key = created.stdout.decode().strip().splitlines()[-1]
    port = _free_port()
    log = (data_dir / "serve.log").open("wb")
    proc = subprocess.Popen(
        [DELIGHT, "serve", "--port", str(port), "--workers", "2"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        assert proc.poll() is None, (data_dir / "serve.log").read_text()
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "delight serve did not become ready"
        time.sleep(0.3)
    try:
        yield base, key, proc, data_dir
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def test_keys_create_prints_the_key_alone_on_the_last_line(
    served: tuple[str, str, subprocess.Popen[bytes], Path],
) -> None:
    _, key, _, _ = served
    assert re.fullmatch(r"dlk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", key)


def test_a_command_that_succeeds_prints_nothing_on_stderr(
    served: tuple[str, str, subprocess.Popen[bytes], Path],
) -> None:
    """No library warnings (a missing XDG_RUNTIME_DIR), no migration chatter, no info lines: stdout says it all."""
    data_dir = served[3]
    env = {k: v for k, v in _env(data_dir).items() if k not in ("XDG_RUNTIME_DIR", "DELIGHT_LOG_JSON")}
    for command in (["keys", "create", "--name", "quiet", "--scopes", "events:write"], ["keys", "list"]):
        done = subprocess.run([DELIGHT, *command], env=env, capture_output=True, timeout=START_TIMEOUT)
        assert done.returncode == 0, done.stderr.decode()
        assert done.stderr.decode() == "", command
    serve_log = (data_dir / "serve.log").read_text()
    assert '"logger":"alembic' not in serve_log
    assert "Warning" not in serve_log


def test_the_readmes_walk_through_works_as_written(
    served: tuple[str, str, subprocess.Popen[bytes], Path],
) -> None:
    """Every command of "Win something" run in bash as written, against a fresh service on the demo rules: each
    answers 2xx, Ana wins the candle and the vase, her third purchase earns 200 points, the vase is redeemed and
    100 points are spent; her purchase posted again is a replay, and with another total a conflict."""
    base, _, _, data_dir = served
    script = readme_walkthrough().replace("http://127.0.0.1:8000", base).replace("python3 -m service", DELIGHT)
    # any answer but a 2xx stops the script; each answer on a line of its own, for the checks below
    prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; echo; }\n'
    walked = subprocess.run(
        ["bash", "-c", prelude + script + '\necho "$NOW"'],
        env=_env(data_dir),
        cwd=ROOT,
        capture_output=True,
        timeout=START_TIMEOUT,
    )
    assert walked.returncode == 0, walked.stdout.decode() + walked.stderr.decode()
    assert walked.stderr.decode() == ""
    *lines, now = walked.stdout.decode().splitlines()
    purchase, profile, second, third, redeemed, spent = (json.loads(line) for line in lines)
    assert {a["rule_id"] for a in purchase["awards"]} == {"first-purchase-candle", "vase-with-handmade"}
    assert all(a["message"].startswith(("Welcome, Ana!", "Thank you, Ana!")) for a in purchase["awards"])
    assert profile["purchase_count"] == 1
    assert second["awards"] == []
    assert [(a["rule_id"], a["points"]) for a in third["awards"]] == [("points-on-third-visit", 200)]
    assert (redeemed["award"]["rule_id"], redeemed["award"]["status"]) == ("vase-with-handmade", "redeemed")
    assert (spent["points"], spent["points_balance"]) == (100, 100)

    headers = {"Authorization": f"Bearer {served[1]}"}
    event = readme_purchase(now)
    again = httpx.post(f"{base}/v1/events", json=event, headers=headers, timeout=10)
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert [a["code"] for a in again.json()["awards"]] == [a["code"] for a in purchase["awards"]]
    changed = {**event, "order": {**event["order"], "total": 1.0}}  # type: ignore[dict-item]
    assert httpx.post(f"{base}/v1/events", json=changed, headers=headers, timeout=10).status_code == 409


def test_served_schema_is_the_committed_contract(served: tuple[str, str, subprocess.Popen[bytes], Path]) -> None:
    base = served[0]
    served_doc = httpx.get(f"{base}/schema/openapi.json", timeout=10).json()
    assert served_doc == json.loads((ROOT / "openapi" / "openapi.json").read_text())


def test_logs_are_json_lines_with_a_request_id(served: tuple[str, str, subprocess.Popen[bytes], Path]) -> None:
    base, _, _, data_dir = served
    httpx.get(f"{base}/health/live", headers={"X-Request-ID": "probe-123"}, timeout=10)
    time.sleep(0.3)
    lines = [json.loads(line) for line in (data_dir / "serve.log").read_text().splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request" and line.get("request_id") == "probe-123"]
    assert requests, "no canonical request line carried the incoming request id"
    assert requests[0]["route"] == "/health/live"
    assert requests[0]["status"] == 200


# --- slow and greedy clients ------------------------------------------------------------------------------------------


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _answer(sock: socket.socket) -> tuple[bytes, dict[str, object]]:
    """The status line and problem body the server sent before closing."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)


def test_a_client_that_drips_its_headers_gets_408_and_is_closed(
    served: tuple[str, str, subprocess.Popen[bytes], Path],
) -> None:
    base = served[0]
    with _connect(base) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        with contextlib.suppress(OSError):  # the server closes while headers are still coming
            for n in range(40):
                sock.sendall(b"X-Slow-%d: 1\r\n" % n)
                time.sleep(0.25)
        status, problem = _answer(sock)
    assert time.monotonic() - started < 8
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert problem["detail"] == "the request line and headers did not arrive within 2 s"


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    served: tuple[str, str, subprocess.Popen[bytes], Path],
) -> None:
    with _connect(served[0]) as sock:
        status, _ = _answer(sock)
    assert status == b"HTTP/1.1 408 Request Timeout"


def test_a_body_that_does_not_arrive_gets_408_and_stores_nothing(
    served: tuple[str, str, subprocess.Popen[bytes], Path],
) -> None:
    base, key, _, _ = served
    event = json.dumps({**readme_purchase(), "event_id": "slow-body-1", "customer_id": "c-slow"}).encode()
    with _connect(base) as sock:
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (key.encode(), len(event))
        )
        sock.sendall(event[:10])
        status, problem = _answer(sock)
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert problem["detail"] == "the request body did not arrive within 2 s"
    headers = {"Authorization": f"Bearer {key}"}
    stored = httpx.get(f"{base}/v1/customers/c-slow", headers=headers, timeout=10)
    assert stored.status_code in (200, 404)
    fresh = httpx.post(f"{base}/v1/events", content=event, headers={**headers, "Content-Type": "application/json"})
    assert fresh.status_code == 201, fresh.text  # the slow one left nothing under its id


def test_headers_past_64_kb_get_431(served: tuple[str, str, subprocess.Popen[bytes], Path]) -> None:
    with _connect(served[0]) as sock:
        # one endless header, in one piece and then nothing more (data the server has not read when it closes
        # would reset the connection)
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000)
        status, problem = _answer(sock)
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert problem["detail"] == "the request line and headers exceed 65536 bytes"


def test_connections_past_the_cap_get_503_at_once_and_readiness_recovers_when_they_go(
    served: tuple[str, str, subprocess.Popen[bytes], Path],
) -> None:
    base = served[0]
    idle = [_connect(base) for _ in range(3 * CONNECTIONS)]  # two workers hold 2 * CONNECTIONS at most
    try:
        time.sleep(0.5)  # well within the header timeout: whoever was held is still waiting for its headers
        answered, _, _ = select.select(idle, [], [], 0)
        refused = [sock.recv(65536).split(b"\r\n")[0] for sock in answered]
        assert len(refused) >= CONNECTIONS
        assert set(refused) == {b"HTTP/1.1 503 Service Unavailable"}
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 10
    while httpx.get(f"{base}/health/ready", timeout=5).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_a_second_serve_on_the_same_data_dir_is_refused_and_leaves_the_first_running(
    served: tuple[str, str, subprocess.Popen[bytes], Path],
) -> None:
    base, _, _, data_dir = served
    second = subprocess.run(
        [DELIGHT, "serve", "--port", str(_free_port())], env=_env(data_dir), capture_output=True, timeout=60
    )
    assert second.returncode == 1
    assert "another `delight serve` is using" in second.stderr.decode()
    assert httpx.get(f"{base}/health/ready", timeout=5).status_code == 200


def test_sigterm_stops_the_service_and_its_embedded_servers(
    served: tuple[str, str, subprocess.Popen[bytes], Path],
) -> None:
    _, _, proc, data_dir = served
    assert _postgres_processes(data_dir), "the embedded PostgreSQL should be running"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    deadline = time.monotonic() + 20
    while _postgres_processes(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _postgres_processes(data_dir), "embedded PostgreSQL still running after shutdown"


def test_serve_refuses_to_start_on_a_bad_rule_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "broken.yaml").write_text(
        "campaign: broken\nrules:\n  - id: r1\n    when: order.totl > 3\n    award: {points: 5}\n"
    )
    result = subprocess.run(
        [DELIGHT, "serve", "--port", str(_free_port())],
        env=_env(tmp_path / "data", rules),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"{rules / 'broken.yaml'}:4: `when` names an unknown field `totl`" in result.stderr.decode()
    assert not (tmp_path / "data").exists(), "nothing should start before the rules are valid"


def test_the_embedded_postgres_allows_2_gb_of_wal_between_checkpoints_even_in_an_older_data_directory(
    tmp_path: Path,
) -> None:
    """Set at every start: a data directory made before the setting existed (initdb's 1 GB) gets it too."""
    postgres = start_postgres(tmp_path, database="postgres")
    try:
        assert re.search(r"^\s*2GB\s*$", postgres.server.psql("SHOW max_wal_size;"), re.MULTILINE)
        postgres.server.psql("ALTER SYSTEM RESET max_wal_size;\nSELECT pg_reload_conf();\n")
        assert re.search(r"^\s*1GB\s*$", postgres.server.psql("SHOW max_wal_size;"), re.MULTILINE)
    finally:
        postgres.stop()
    postgres = start_postgres(tmp_path, database="postgres")  # the same directory, as an upgrade finds it
    try:
        shown = postgres.server.psql("SHOW max_wal_size;")
    finally:
        postgres.stop()
    assert re.search(r"^\s*2GB\s*$", shown, re.MULTILINE), shown


def test_the_embedded_postgres_takes_a_quarter_of_a_containers_memory_limit(tmp_path: Path) -> None:
    machine = memory_available(limits=())
    assert machine > 2**30
    unset_v2, unset_v1, limit = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes", tmp_path / "limit"
    unset_v2.write_text("max\n")
    unset_v1.write_text("9223372036854771712\n")
    limit.write_text(f"{2 * 2**30}\n")
    assert memory_available(limits=(unset_v2, unset_v1, tmp_path / "absent")) == machine
    assert memory_available(limits=(unset_v2, limit)) == 2 * 2**30
    assert shared_buffers(2 * 2**30) == "512MB"
    assert shared_buffers(256 * 2**20) == "128MB"  # never below initdb's default
    assert shared_buffers(64 * 2**30) == "8192MB"


def test_the_embedded_postgres_makes_new_wal_files_without_zeros_and_has_its_shared_buffers_from_the_start(
    tmp_path: Path,
) -> None:
    """Shared buffers take a restart: a new data directory gets it at once; one made before the setting
    existed gets it at its next start, and WAL files without zeros at once."""
    wanted = shared_buffers()
    assert re.fullmatch(r"\d+MB", wanted)
    assert 128 <= int(wanted[:-2]) <= 8192

    def shown(postgres: EmbeddedPostgres) -> dict[str, str]:
        rows = postgres.server.psql(
            "SELECT 'shared_buffers=' || pg_size_bytes(current_setting('shared_buffers')) / 2^20 || 'MB' "
            "UNION ALL SELECT 'wal_init_zero=' || current_setting('wal_init_zero');"
        )
        return dict(line.strip().split("=") for line in rows.splitlines() if "=" in line)

    postgres = start_postgres(tmp_path, database="postgres")
    try:
        assert shown(postgres) == {"shared_buffers": wanted, "wal_init_zero": "off"}
        # as a data directory made before these settings finds itself
        postgres.server.psql("ALTER SYSTEM RESET shared_buffers;\nALTER SYSTEM RESET wal_init_zero;\n")
    finally:
        postgres.stop()
    postgres = start_postgres(tmp_path, database="postgres")
    try:
        assert shown(postgres) == {"shared_buffers": "128MB", "wal_init_zero": "off"}
    finally:
        postgres.stop()
    postgres = start_postgres(tmp_path, database="postgres")
    try:
        assert shown(postgres)["shared_buffers"] == wanted
    finally:
        postgres.stop()


def _redis_dirs_in_temp() -> set[str]:
    """The folders in the system's temporary directory that hold a Redis socket."""
    temp = Path(tempfile.gettempdir())
    return {str(p.parent) for p in temp.glob("*/redis.socket")}


def test_the_embedded_redis_keeps_its_socket_under_the_data_dir_and_leaves_nothing_behind(tmp_path: Path) -> None:
    before = _redis_dirs_in_temp()
    data_dir = tmp_path / "data"
    redis = start_redis(data_dir)
    try:
        assert redis.url == f"unix://{data_dir.resolve() / 'redis' / 'redis.socket'}"
        assert sorted(p.name for p in (data_dir / "redis").iterdir()) == [
            "redis.config",
            "redis.log",
            "redis.pid",
            "redis.socket",
        ]
        assert redis.client.ping()
        assert not _redis_dirs_in_temp() - before
    finally:
        redis.stop()
    assert not (data_dir / "redis").exists()
    assert (data_dir / "redis.rdb").exists()  # the data stays
    assert not _redis_dirs_in_temp() - before  # none new


def test_the_embedded_redis_under_a_path_too_long_for_a_socket_cleans_up_its_temporary_one(tmp_path: Path) -> None:
    before = _redis_dirs_in_temp()
    data_dir = tmp_path / ("d" * 100)
    redis = start_redis(data_dir)
    try:
        socket_dir = Path(redis.url.removeprefix("unix://")).parent
        assert socket_dir.parent == Path(tempfile.gettempdir())
        assert redis.client.ping()
    finally:
        redis.stop()
    assert not socket_dir.exists()
    assert not _redis_dirs_in_temp() - before  # none new
