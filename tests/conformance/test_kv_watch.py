"""KV and config watches through ironflow-py's `watch_kv` / `watch_config` (the `watch` extra, over WebSocket),
on the database backends (`server`: SQLite and Postgres) and on a server whose KV store is NATS JetStream
(`--nats-url`, a real `nats-server -js` started for the session), plus the SDK's KV calls against the NATS
backend: revisions, create-only, compare-and-set (a concurrent race), tombstones, purge, key filters.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from ironflow import IronflowClient, IronflowError
from ironflow._http import PreconditionFailedError

import ifconf
from ifconf import Server, fails, parallel

FRAME_TIMEOUT_S = 15


# ── a server whose KV store is NATS ──────────────────────────────────────────────────────────────


@pytest.fixture(scope="session")
def nats_server(nats_url: str, backend: str) -> Iterator[Server]:
    """A server per backend whose KV buckets live in NATS (its other tables stay in the database)."""
    srv, db = ifconf.start_server(backend, ("--nats-url", nats_url))
    try:
        yield srv
        code, _ = srv.stop()
        assert code == 0, f"graceful shutdown failed with NATS KV (exit {code})\n{srv.logs()}"
    finally:
        ifconf.cleanup(srv, db)


@pytest.fixture(params=["database", "nats"])
def kv_server(request: pytest.FixtureRequest, backend: str) -> Server:
    """Every KV watch test runs with KV in the database and in NATS, on both backends."""
    if request.param == "nats":
        return request.getfixturevalue("nats_server")
    return request.getfixturevalue("server")


# ── helpers ──────────────────────────────────────────────────────────────────────────────────────


def make_bucket(rest: IronflowClient, name: str, **settings: Any) -> None:
    info = rest.kv_buckets({"name": name, **settings})
    assert info["name"] == name, info


def put(rest: IronflowClient, bucket: str, key: str, body: Any, **cond: str) -> int:
    rev = rest.kv_update_buckets_keys(bucket, key, body, **cond)["revision"]
    assert isinstance(rev, int) and rev > 0
    return rev


async def next_event(it: AsyncIterator[Any]) -> Any:
    return await asyncio.wait_for(anext(it), FRAME_TIMEOUT_S)


# ── KV watch ─────────────────────────────────────────────────────────────────────────────────────


def test_watch_kv_sees_puts_and_deletes_in_revision_order(kv_server: Server, uid: str) -> None:
    rest = kv_server.rest()
    b = f"{uid}-watched"
    make_bucket(rest, b, history=10)
    seed = put(rest, b, "seed", {"n": 0})

    async def run() -> None:
        it = kv_server.rest().watch_kv(b)
        try:
            first = await next_event(it)
            assert (first.bucket, first.key, first.operation, first.revision) == (b, "seed", "put", seed), first
            assert first.value == b'{"n": 0}', first

            # A burst from 4 concurrent writers, then a delete of each writer's first key.
            def writer(w: int) -> list[int]:
                client = kv_server.rest()
                return [put(client, b, f"burst.{w}.{i}", {"w": w, "i": i}) for i in range(15)]

            results = await asyncio.to_thread(parallel, 4, writer)
            expected = sorted(rev for revs in results for rev in revs)
            seen = []
            while len(seen) < len(expected):
                ev = await next_event(it)
                assert ev.operation == "put" and ev.key.startswith("burst."), ev
                seen.append(ev.revision)
            assert seen == expected, f"not every put arrived in revision order: {seen} vs {expected}"

            for w in range(4):
                await asyncio.to_thread(rest.kv_delete_buckets_keys, b, f"burst.{w}.0")
            for w in range(4):
                ev = await next_event(it)
                assert (ev.key, ev.operation, ev.value) == (f"burst.{w}.0", "delete", None), ev
                assert ev.revision > expected[-1], ev
        finally:
            await it.aclose()

    asyncio.run(run())


def test_watch_kv_key_filter(kv_server: Server, uid: str) -> None:
    rest = kv_server.rest()
    b = f"{uid}-filtered"
    make_bucket(rest, b)
    put(rest, b, "user.0", "before")

    async def run() -> None:
        it = kv_server.rest().watch_kv(b, key="user.*")
        try:
            assert (await next_event(it)).key == "user.0"
            for k in ("order.1", "user.1", "user.1.deep", "user.2"):
                await asyncio.to_thread(put, rest, b, k, k)
            got = [(await next_event(it)).key for _ in range(2)]
            assert got == ["user.1", "user.2"], got
        finally:
            await it.aclose()

    asyncio.run(run())


def test_watch_kv_unknown_bucket_is_refused(kv_server: Server, uid: str) -> None:
    async def run() -> None:
        it = kv_server.rest().watch_kv(f"{uid}-missing")
        with pytest.raises(IronflowError) as err:
            await next_event(it)
        assert err.value.status_code == 404, err.value
        await it.aclose()

    asyncio.run(run())


def test_watch_kv_needs_a_key(kv_server: Server, uid: str) -> None:
    b = f"{uid}-private"
    make_bucket(kv_server.rest(), b)

    async def run() -> None:
        it = kv_server.rest(api_key=False).watch_kv(b)
        with pytest.raises(IronflowError) as err:
            await next_event(it)
        assert err.value.status_code == 401, err.value
        await it.aclose()

    asyncio.run(run())


# ── config watch ─────────────────────────────────────────────────────────────────────────────────


def test_watch_config_sees_each_revision(server: Server, uid: str) -> None:
    rest = server.rest()
    name = f"cfg_{uid}".replace("-", "_")
    rest.config_create(name, {"mode": "a"})

    async def run() -> None:
        it = server.rest().watch_config(name)
        try:
            first = await next_event(it)
            assert (first.name, first.data, first.revision) == (name, {"mode": "a"}, 1), first
            ifconf.parse_ts(first.updated_at)
            for mode in ("b", "c"):
                await asyncio.to_thread(rest.config_create, name, {"mode": mode})
            await asyncio.to_thread(rest.config_patch, name, {"extra": True})
            got = [await next_event(it) for _ in range(3)]
            assert [(e.revision, e.data) for e in got] == [
                (2, {"mode": "b"}), (3, {"mode": "c"}), (4, {"mode": "c", "extra": True})], got
            await asyncio.to_thread(rest.config_delete, name)
            gone = await next_event(it)
            assert (gone.name, gone.data) == (name, None), gone
        finally:
            await it.aclose()

    asyncio.run(run())


# ── the SDK's KV calls on the NATS backend ───────────────────────────────────────────────────────


def test_nats_kv_through_the_sdk(nats_server: Server, uid: str) -> None:
    rest = nats_server.rest()
    b = f"{uid}-nats"
    info = rest.kv_buckets({"name": b, "description": "in JetStream", "history": 5, "max_value_size": 64})
    assert (info["name"], info["description"], info["history"], info["max_value_size"]) == (
        b, "in JetStream", 5, 64), info
    fails(409, rest.kv_buckets, {"name": b})
    r1 = put(rest, b, "user.1", {"v": 1}, if_none_match="*")
    with pytest.raises(PreconditionFailedError):
        rest.kv_update_buckets_keys(b, "user.1", {"v": 2}, if_none_match="*")
    r2 = put(rest, b, "user.1", {"v": 2}, if_match=str(r1))
    assert r2 > r1
    with pytest.raises(PreconditionFailedError):
        rest.kv_update_buckets_keys(b, "user.1", "stale", if_match=str(r1))
    got = rest.kv_get_buckets_keys(b, "user.1")
    assert (got["revision"], got["operation"]) == (r2, "put"), got
    put(rest, b, "order.1", "x")
    assert rest.kv_list_buckets_keys(b, filter="user.*")["keys"] == ["user.1"]
    fails(413, rest.kv_update_buckets_keys, b, "big", "x" * 100)
    rest.kv_delete_buckets_keys(b, "user.1")
    fails(404, rest.kv_get_buckets_keys, b, "user.1")
    r3 = put(rest, b, "user.1", {"v": 3}, if_none_match="*")
    assert r3 > r2, "create-only succeeds over a tombstone"
    rest.kv_delete_buckets_keys(b, "user.1", purge=True)
    fails(404, rest.kv_get_buckets_keys, b, "user.1")
    fails(404, rest.kv_get_buckets_keys, f"{uid}-absent", "k")
    assert b in [x["name"] for x in rest.kv_list_buckets()["buckets"]]
    rest.kv_delete_buckets(b)
    fails(404, rest.kv_get_buckets, b)


def test_nats_kv_compare_and_set_race(nats_server: Server, uid: str) -> None:
    """20 writers increment one counter with If-Match retries; the counter ends at exactly 20."""
    b = f"{uid}-race"
    rest = nats_server.rest()
    make_bucket(rest, b)
    put(rest, b, "n", 0)

    def incr(_: int) -> None:
        client = nats_server.rest()
        while True:
            cur = client.kv_get_buckets_keys(b, "n")
            n = int(__import__("base64").b64decode(cur["value"]))
            try:
                client.kv_update_buckets_keys(b, "n", n + 1, if_match=str(cur["revision"]))
                return
            except PreconditionFailedError:
                continue

    for result in parallel(20, incr):
        assert not isinstance(result, BaseException), result
    final = rest.kv_get_buckets_keys(b, "n")
    assert int(__import__("base64").b64decode(final["value"])) == 20, final
