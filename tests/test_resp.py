"""The lean Redis client of the key check (``service/lib/resp.py``), against the real test Redis."""

from __future__ import annotations

import asyncio
import random
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.keys.service import _LOOKUP_AND_COUNT
from service.lib.redis import close, connect
from service.lib.resp import LeanRedis, Script, _Incomplete, _Protocol, encode, parse


@asynccontextmanager
async def lean_for(url: str, seconds: float) -> AsyncIterator[LeanRedis]:
    """The lean twin of the redis-py client ``url`` makes, as the service makes it."""
    redis = connect(url, timeout=seconds)
    client = LeanRedis.for_client(redis, seconds)
    assert client is not None
    try:
        yield client
    finally:
        await client.close()
        await close(redis)


@pytest.fixture
async def lean(redis_url: str) -> AsyncIterator[LeanRedis]:
    async with lean_for(redis_url, seconds=2.0) as client:
        yield client


def key() -> str:
    return f"delight:test:resp:{uuid.uuid4().hex}"


async def test_it_reads_and_writes_the_same_database_as_redis_py(lean: LeanRedis, redis: Redis) -> None:
    """The URL's database is selected on connect: what redis-py wrote, the lean client reads, and back."""
    name = key()
    await redis.set(name, b"written by redis-py", ex=60)
    assert await lean.execute(encode("GET", name)) == b"written by redis-py"
    assert await lean.execute(encode("SET", name, "and back", "EX", 60)) == b"OK"
    assert await redis.get(name) == b"and back"
    assert await lean.execute(encode("GET", key())) is None


async def test_concurrent_calls_each_get_their_own_reply(lean: LeanRedis, redis: Redis) -> None:
    """Hundreds of calls in flight on one connection: replies come back in order, each to its caller."""
    names = [key() for _ in range(300)]
    async with redis.pipeline(transaction=False) as pipe:
        for i, name in enumerate(names):
            pipe.set(name, str(i).encode(), ex=60)
        await pipe.execute()
    order = list(range(len(names)))
    random.Random(3).shuffle(order)
    replies = await asyncio.gather(*(lean.execute(encode("GET", names[i])) for i in order))
    assert replies == [str(i).encode() for i in order]


async def test_the_key_check_script_runs_and_is_loaded_when_redis_has_forgotten_it(
    lean: LeanRedis, redis: Redis
) -> None:
    cache, counter = key(), key()
    await redis.set(cache, b'{"secret_hash": "abc", "name": "till"}', ex=60)
    await redis.script_flush()
    script = Script(_LOOKUP_AND_COUNT)
    first = await lean.eval(script, [cache, counter], [b"revoked", "abc", 65])  # NOSCRIPT, then EVAL
    second = await lean.eval(script, [cache, counter], [b"revoked", "abc", 65])  # EVALSHA
    assert first == [b'{"secret_hash": "abc", "name": "till"}', 1]
    assert second == [b'{"secret_hash": "abc", "name": "till"}', 2]
    assert await redis.script_exists(script.sha) == [True]
    assert await lean.eval(script, [cache, counter], [b"revoked", "wrong", 65]) == [
        b'{"secret_hash": "abc", "name": "till"}',
        -1,
    ]
    await redis.delete(cache, counter)


async def test_an_error_reply_raises_and_leaves_the_connection_usable(lean: LeanRedis, redis: Redis) -> None:
    name = key()
    await redis.set(name, b"not a number", ex=60)
    with pytest.raises(ResponseError, match="not an integer"):
        await lean.execute(encode("INCR", name))
    assert await lean.execute(encode("GET", name)) == b"not a number"


async def test_a_connection_the_server_closes_is_replaced_on_the_next_call(lean: LeanRedis, redis: Redis) -> None:
    client_id = await lean.execute(encode("CLIENT", "ID"))
    assert await redis.client_kill_filter(_id=client_id) == 1
    for _ in range(100):  # until the client has read the close
        if lean._protocol is None or lean._protocol.closed:
            break
        await asyncio.sleep(0.01)
    assert await lean.execute(encode("CLIENT", "ID")) != client_id


async def test_a_call_cancelled_while_waiting_leaves_its_reply_to_nobody_else(lean: LeanRedis, redis: Redis) -> None:
    """The cancelled call's reply still arrives; it is read and dropped, and the next call gets its own."""
    name = key()
    await redis.set(name, b"mine", ex=60)
    await lean.execute(encode("PING"))  # connected
    slow = asyncio.create_task(lean.execute(encode("EVAL", "local t = redis.call('TIME') return 'late'", 0)))
    await asyncio.sleep(0)  # sent
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert await lean.execute(encode("GET", name)) == b"mine"


async def test_a_connect_whose_callers_were_all_cancelled_is_not_reused_once_its_connection_drops(
    lean: LeanRedis, redis: Redis
) -> None:
    """The callers of the first connect go away before it finishes (requests cut off); it still finishes.
    When that connection later drops, the next call connects afresh instead of using the dead one."""
    calls = [asyncio.create_task(lean.execute(encode("PING"))) for _ in range(3)]
    await asyncio.sleep(0)
    for call in calls:
        call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)
    for _ in range(200):  # the connect finishes on its own, and then forgets itself
        if lean._protocol is not None and lean._connecting is None:
            break
        await asyncio.sleep(0.01)
    assert lean._protocol is not None
    assert lean._connecting is None
    client_id = await lean.execute(encode("CLIENT", "ID"))
    assert await redis.client_kill_filter(_id=client_id) == 1
    for _ in range(100):
        if lean._protocol.closed:
            break
        await asyncio.sleep(0.01)
    assert await lean.execute(encode("CLIENT", "ID")) != client_id


async def test_a_silent_server_times_out_every_waiting_call_and_the_next_call_connects_again(redis_url: str) -> None:
    """A call that is not answered in time fails, and so does every call behind it on the connection: a late
    reply must not answer the wrong call. Redis paused by ``CLIENT PAUSE`` stands in for a hung server."""
    admin = connect(redis_url, timeout=10.0)
    try:
        async with lean_for(redis_url, seconds=0.5) as lean:
            assert await lean.execute(encode("PING")) == b"PONG"
            await admin.execute_command("CLIENT", "PAUSE", 3000, "ALL")
            started = asyncio.get_running_loop().time()
            results = await asyncio.gather(*(lean.execute(encode("PING")) for _ in range(5)), return_exceptions=True)
            assert all(isinstance(r, RedisTimeoutError) for r in results), results
            assert asyncio.get_running_loop().time() - started < 2.0  # the timeout, not the pause, ended them
            await admin.execute_command("CLIENT", "UNPAUSE")
            assert await lean.execute(encode("PING")) == b"PONG"
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await close(admin)


async def test_no_server_is_a_connection_error_not_a_hang() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    async with lean_for(f"redis://127.0.0.1:{port}/0", seconds=1.0) as lean:
        with pytest.raises(RedisConnectionError):
            await lean.execute(encode("PING"))


async def test_a_wrong_password_is_a_connection_error(redis_url: str) -> None:
    """A Redis without a password refuses ``AUTH``: the connection is not used."""
    if redis_url.startswith("unix://"):
        wrong = redis_url + ("&" if "?" in redis_url else "?") + "password=wrong"
    else:
        wrong = redis_url.replace("redis://", "redis://:wrong@", 1)
    async with lean_for(wrong, seconds=1.0) as lean:
        with pytest.raises(RedisConnectionError, match="refused"):
            await lean.execute(encode("PING"))


async def test_tls_urls_are_left_to_redis_py() -> None:
    redis = connect("rediss://example.invalid:6380/0", timeout=1.0)
    assert LeanRedis.for_client(redis, timeout=1.0) is None
    await close(redis)


replies = st.recursive(
    st.none() | st.integers(-(2**63), 2**63 - 1) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)


def resp(value: object) -> bytes:
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    assert isinstance(value, list)
    return b"*%d\r\n" % len(value) + b"".join(resp(v) for v in value)


@given(st.lists(replies, min_size=1, max_size=6), st.data())
def test_replies_split_anywhere_across_reads_are_parsed_whole_and_in_order(
    values: list[object], data: st.DataObject
) -> None:
    wire = b"".join(resp(v) for v in values)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    loop = asyncio.new_event_loop()
    try:
        protocol = _Protocol()
        futures = [loop.create_future() for _ in values]
        protocol.waiting.extend(futures)
        for chunk in chunks:
            protocol.data_received(chunk)
        assert [f.result() for f in futures] == values
        assert not protocol.buffer
    finally:
        loop.close()


def test_simple_and_error_replies_and_an_unfinished_reply() -> None:
    assert parse(b"+OK\r\n") == (b"OK", 5)
    error, end = parse(b"-ERR no such thing\r\n")
    assert isinstance(error, ResponseError)
    assert str(error) == "ERR no such thing"
    assert end == 20
    with pytest.raises(_Incomplete):
        parse(b"$5\r\nabc")
    with pytest.raises(_Incomplete):
        parse(b"*2\r\n:1\r\n")
