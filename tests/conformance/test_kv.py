"""KV store (`/api/v1/kv/buckets`): buckets, raw values, create-only and compare-and-set writes, tombstones,
purge, key filters, history, TTL, and the SDK's own create-only consumer (`CommandDedup`).

Every call goes through ironflow-py's `IronflowClient` (`kv_*` methods, `command_dedup`) except where the SDK
has no way to say it: a status the SDK hides (201/204), a non-JSON value body (the SDK JSON-encodes every
body), and key history (the SDK has no method for it).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from typing import Any
from urllib.parse import quote

import pytest
from ironflow import IronflowClient, IronflowError
from ironflow._command_dedup import CommandDedup
from ironflow._http import PayloadTooLargeError, PreconditionFailedError

import ifconf
from ifconf import Resp, Server, assert_json_error, fails, parallel

BUCKET_FIELDS = {"name", "description", "history", "ttl_seconds", "max_value_size", "max_bytes", "values",
                 "bytes", "created_at"}
ENTRY_FIELDS = {"key", "value", "revision", "created_at", "operation"}


# ── helpers ──────────────────────────────────────────────────────────────────────────────────────


def key_path(bucket: str, key: str, suffix: str = "") -> str:
    return f"/api/v1/kv/buckets/{quote(bucket, safe='')}/keys/{quote(key, safe='')}{suffix}"


def raw_put(server: Server, bucket: str, key: str, value: bytes, headers: dict[str, str] | None = None) -> Resp:
    return server.request("PUT", key_path(bucket, key), raw=value, headers=headers,
                          content_type="application/octet-stream")


def history(server: Server, bucket: str, key: str) -> list[dict[str, Any]]:
    """Raw `GET …/keys/{key}/history` (no SDK method); checks the envelope."""
    r = server.request("GET", key_path(bucket, key, "/history"))
    assert r.status == 200, r
    body = r.json()
    assert set(body) == {"entries", "count"}, body
    assert isinstance(body["entries"], list) and body["count"] == len(body["entries"]), body
    for e in body["entries"]:
        check_entry(e, key)
    return body["entries"]


def value_of(entry: dict[str, Any]) -> bytes:
    return base64.b64decode(entry["value"], validate=True)


def check_entry(entry: dict[str, Any], key: str) -> None:
    assert set(entry) == ENTRY_FIELDS, entry
    assert entry["key"] == key, entry
    assert isinstance(entry["revision"], int) and not isinstance(entry["revision"], bool), entry
    assert entry["revision"] > 0, entry
    assert entry["operation"] in ("put", "delete"), entry
    assert isinstance(entry["value"], str), entry
    recent(entry["created_at"])


def check_live(entry: dict[str, Any], key: str, value: bytes, revision: int | None = None) -> None:
    check_entry(entry, key)
    assert entry["operation"] == "put", entry
    assert value_of(entry) == value, f"stored bytes differ: {value_of(entry)!r} != {value!r}"
    if revision is not None:
        assert entry["revision"] == revision, entry


def recent(ts: str) -> dt.datetime:
    parsed = ifconf.parse_ts(ts)
    now = dt.datetime.now(dt.timezone.utc)
    assert abs((now - parsed).total_seconds()) < 120, f"timestamp {ts} is not close to now ({now})"
    return parsed


def check_bucket(info: dict[str, Any], **expected: Any) -> None:
    assert set(info) == BUCKET_FIELDS, info
    for k in ("history", "ttl_seconds", "max_value_size", "max_bytes", "values", "bytes"):
        assert isinstance(info[k], int) and not isinstance(info[k], bool), (k, info)
    recent(info["created_at"])
    for k, v in expected.items():
        assert info[k] == v, f"bucket field {k}: expected {v!r}, got {info[k]!r} in {info}"


def put(rest: IronflowClient, bucket: str, key: str, body: Any, **cond: str) -> int:
    out = rest.kv_update_buckets_keys(bucket, key, body, **cond)
    assert set(out) == {"revision"}, out
    rev = out["revision"]
    assert isinstance(rev, int) and not isinstance(rev, bool) and rev > 0, out
    return rev


def js(body: Any) -> bytes:
    """The exact bytes ironflow-py sends for a JSON body (what the server must store verbatim)."""
    return json.dumps(body).encode("utf-8")


# ── buckets ──────────────────────────────────────────────────────────────────────────────────────


def test_bucket_lifecycle(server: Server, rest: IronflowClient, uid: str) -> None:
    b = f"{uid}-orders"
    info = rest.kv_buckets({"name": b, "description": "order cache", "history": 5, "ttl_seconds": 3600,
                            "max_value_size": 1024, "max_bytes": 1 << 20})
    check_bucket(info, name=b, description="order cache", history=5, ttl_seconds=3600, max_value_size=1024,
                 max_bytes=1 << 20, values=0, bytes=0)

    again = fails(409, rest.kv_buckets, {"name": b})
    assert b in str(again), f"the 409 should name the bucket: {again}"

    got = rest.kv_get_buckets(b)
    assert got == info, f"GET differs from the create answer: {got} vs {info}"

    listing = rest.kv_list_buckets()
    assert set(listing) == {"buckets", "count"}, listing
    assert listing["count"] == len(listing["buckets"]), listing
    mine = [x for x in listing["buckets"] if x["name"] == b]
    assert mine == [info], listing

    put(rest, b, "k", {"n": 1})
    check_bucket(rest.kv_get_buckets(b), values=1, bytes=len(js({"n": 1})))

    assert rest.kv_delete_buckets(b) is None
    fails(404, rest.kv_get_buckets, b)
    fails(404, rest.kv_delete_buckets, b)
    assert b not in [x["name"] for x in rest.kv_list_buckets()["buckets"]]


def test_bucket_statuses_and_defaults(server: Server, uid: str) -> None:
    b = f"{uid}_raw"
    r = server.request("POST", "/api/v1/kv/buckets", json_body={"name": b})
    assert r.status == 201, r
    assert r.content_type.split(";")[0] == "application/json", r
    check_bucket(r.json(), name=b, description="", history=1, ttl_seconds=0, max_value_size=0, max_bytes=0,
                 values=0, bytes=0)
    assert_json_error(server.request("POST", "/api/v1/kv/buckets", json_body={"name": b}), 409)
    r = server.request("DELETE", f"/api/v1/kv/buckets/{b}")
    assert r.status == 204 and r.body == b"", r


def test_bucket_bad_requests(rest: IronflowClient, uid: str) -> None:
    for bad in ("has space", "dotted.name", "", "x" * 65, "ünï", "a/b", "star*"):
        err = fails(400, rest.kv_buckets, {"name": bad})
        assert "name" in str(err).lower() or "bucket" in str(err).lower(), err
    fails(400, rest.kv_buckets, {"name": f"{uid}-neg", "ttl_seconds": -1})
    fails(400, rest.kv_buckets, {"name": f"{uid}-neg", "max_value_size": -5})
    fails(400, rest.kv_buckets, {"name": f"{uid}-hist", "history": 1000})
    fails(400, rest.kv_buckets, {"description": "no name"})
    # none of the refused requests created anything
    names = [x["name"] for x in rest.kv_list_buckets()["buckets"]]
    assert not [n for n in names if n.startswith(uid)], names


def test_bucket_delete_removes_its_keys(rest: IronflowClient, uid: str) -> None:
    b = f"{uid}-gone"
    rest.kv_buckets({"name": b})
    put(rest, b, "a", "one")
    put(rest, b, "b", "two")
    rest.kv_delete_buckets(b)
    fails(404, rest.kv_get_buckets_keys, b, "a")

    rest.kv_buckets({"name": b})
    assert rest.kv_list_buckets_keys(b) == {"keys": [], "count": 0}, "a recreated bucket must start empty"
    fails(404, rest.kv_get_buckets_keys, b, "a")
    check_bucket(rest.kv_get_buckets(b), values=0, bytes=0)
    rev = put(rest, b, "a", "fresh")
    check_live(rest.kv_get_buckets_keys(b, "a"), "a", js("fresh"), rev)


# ── values ───────────────────────────────────────────────────────────────────────────────────────


def test_put_stores_body_verbatim(server: Server, rest: IronflowClient, uid: str) -> None:
    b = f"{uid}-vals"
    rest.kv_buckets({"name": b})

    doc = {"name": "Ada", "tags": ["x", "y"], "n": 1.5, "nested": {"ok": True, "none": None}}
    r1 = put(rest, b, "user.1", doc)
    check_live(rest.kv_get_buckets_keys(b, "user.1"), "user.1", js(doc), r1)

    blob = bytes(range(256)) + b"\x00\xff not json {"
    r = raw_put(server, b, "blob", blob)
    assert r.status == 200, r
    r2 = r.json()["revision"]
    check_live(rest.kv_get_buckets_keys(b, "blob"), "blob", blob, r2)

    odd = "user.42/profile=v2_x-y"
    r3 = put(rest, b, odd, "text")
    check_live(rest.kv_get_buckets_keys(b, odd), odd, js("text"), r3)

    r4 = put(rest, b, "user.1", [1, 2, 3])
    check_live(rest.kv_get_buckets_keys(b, "user.1"), "user.1", js([1, 2, 3]), r4)

    assert r1 < r2 < r3 < r4, f"revisions must strictly increase per bucket: {[r1, r2, r3, r4]}"

    # revisions are per bucket: another bucket counts on its own and does not disturb this one
    other = f"{uid}-other"
    rest.kv_buckets({"name": other})
    put(rest, other, "k", 1)
    r5 = put(rest, b, "blob", "again")
    assert r5 > r4, (r4, r5)


def test_missing_bucket_and_key(server: Server, rest: IronflowClient, uid: str) -> None:
    missing = f"{uid}-nobucket"
    fails(404, rest.kv_update_buckets_keys, missing, "k", {"v": 1})
    fails(404, rest.kv_get_buckets_keys, missing, "k")
    fails(404, rest.kv_list_buckets_keys, missing)
    fails(404, rest.kv_get_buckets, missing)
    assert_json_error(server.request("GET", key_path(missing, "k", "/history")), 404)
    assert_json_error(raw_put(server, missing, "k", b"v"), 404)
    fails(404, rest.kv_delete_buckets_keys, missing, "k")
    fails(404, rest.kv_delete_buckets_keys, missing, "k", purge=True)
    assert missing not in [x["name"] for x in rest.kv_list_buckets()["buckets"]], "a write created the bucket"

    b = f"{uid}-present"
    rest.kv_buckets({"name": b})
    fails(404, rest.kv_get_buckets_keys, b, "never.written")
    assert_json_error(server.request("GET", key_path(b, "never.written")), 404)


def test_bad_keys(rest: IronflowClient, uid: str) -> None:
    b = f"{uid}-keys"
    rest.kv_buckets({"name": b})
    for bad in ("has space", "a..b", ".lead", "trail.", "star*", "gt>"):
        fails(400, rest.kv_update_buckets_keys, b, bad, 1)
    assert rest.kv_list_buckets_keys(b)["keys"] == []


def test_create_only_if_none_match(server: Server, rest: IronflowClient, uid: str) -> None:
    b = f"{uid}-create"
    rest.kv_buckets({"name": b, "history": 10})
    r1 = put(rest, b, "k", {"v": 1}, if_none_match="*")

    with pytest.raises(PreconditionFailedError) as info:
        rest.kv_update_buckets_keys(b, "k", {"v": 2}, if_none_match="*")
    assert info.value.status_code == 412, info.value
    check_live(rest.kv_get_buckets_keys(b, "k"), "k", js({"v": 1}), r1)

    raw = raw_put(server, b, "k", b"raw", headers={"If-None-Match": "*"})
    assert_json_error(raw, 412)

    # a deleted key has no live value: create-only succeeds over the tombstone
    rest.kv_delete_buckets_keys(b, "k")
    r2 = put(rest, b, "k", {"v": 3}, if_none_match="*")
    assert r2 > r1, (r1, r2)
    check_live(rest.kv_get_buckets_keys(b, "k"), "k", js({"v": 3}), r2)
    fails(412, rest.kv_update_buckets_keys, b, "k", {"v": 4}, if_none_match="*")


def test_compare_and_set_if_match(server: Server, rest: IronflowClient, uid: str) -> None:
    b = f"{uid}-cas"
    rest.kv_buckets({"name": b})
    r1 = put(rest, b, "k", "a")
    r2 = put(rest, b, "k", "b", if_match=str(r1))
    assert r2 > r1

    with pytest.raises(PreconditionFailedError):
        rest.kv_update_buckets_keys(b, "k", "stale", if_match=str(r1))
    check_live(rest.kv_get_buckets_keys(b, "k"), "k", js("b"), r2)

    fails(412, rest.kv_update_buckets_keys, b, "absent", "x", if_match="1")
    fails(404, rest.kv_get_buckets_keys, b, "absent")
    fails(400, rest.kv_update_buckets_keys, b, "k", "x", if_match="not-a-number")

    # raw If-Match with a quoted revision (an ETag-style value)
    r = raw_put(server, b, "k", b"quoted", headers={"If-Match": f'"{r2}"'})
    assert r.status == 200, r
    r3 = r.json()["revision"]
    assert r3 > r2
    check_live(rest.kv_get_buckets_keys(b, "k"), "k", b"quoted", r3)

    # a deleted key cannot be compare-and-set against its old revision
    rest.kv_delete_buckets_keys(b, "k")
    fails(412, rest.kv_update_buckets_keys, b, "k", "x", if_match=str(r3))


def test_concurrent_conditional_writes(server: Server, uid: str) -> None:
    b = f"{uid}-race"
    rest = server.rest()
    rest.kv_buckets({"name": b})
    n = 8

    # create-only: exactly one writer wins a fresh key
    outs = parallel(n, lambda i: server.rest().kv_update_buckets_keys(b, "claim", {"w": i}, if_none_match="*"))
    won = [(i, o) for i, o in enumerate(outs) if isinstance(o, dict)]
    lost = [o for o in outs if isinstance(o, IronflowError) and o.status_code == 412]
    assert len(won) == 1 and len(lost) == n - 1, f"create-only race: {outs}"
    winner, res = won[0]
    check_live(rest.kv_get_buckets_keys(b, "claim"), "claim", js({"w": winner}), res["revision"])

    # compare-and-set: exactly one writer wins against the same revision
    base = put(rest, b, "counter", 0)
    outs = parallel(n, lambda i: server.rest().kv_update_buckets_keys(b, "counter", i + 1, if_match=str(base)))
    won = [(i, o) for i, o in enumerate(outs) if isinstance(o, dict)]
    lost = [o for o in outs if isinstance(o, IronflowError) and o.status_code == 412]
    assert len(won) == 1 and len(lost) == n - 1, f"CAS race: {outs}"
    winner, res = won[0]
    check_live(rest.kv_get_buckets_keys(b, "counter"), "counter", js(winner + 1), res["revision"])

    # unconditional writers all get distinct revisions
    outs = parallel(n, lambda i: server.rest().kv_update_buckets_keys(b, f"k{i}", i))
    revs = [o["revision"] for o in outs if isinstance(o, dict)]
    assert len(revs) == n and len(set(revs)) == n, outs


def test_max_value_size(server: Server, rest: IronflowClient, uid: str) -> None:
    b = f"{uid}-small"
    rest.kv_buckets({"name": b, "max_value_size": 16})
    r1 = raw_put(server, b, "k", b"x" * 16)
    assert r1.status == 200, r1
    with pytest.raises(PayloadTooLargeError) as info:
        rest.kv_update_buckets_keys(b, "k", "y" * 20)
    assert info.value.status_code == 413
    assert_json_error(raw_put(server, b, "k", b"z" * 17), 413)
    check_live(rest.kv_get_buckets_keys(b, "k"), "k", b"x" * 16, r1.json()["revision"])


# ── delete, purge, listing, history ──────────────────────────────────────────────────────────────


def test_delete_tombstone_and_purge(server: Server, rest: IronflowClient, uid: str) -> None:
    b = f"{uid}-del"
    rest.kv_buckets({"name": b, "history": 5})
    r1 = put(rest, b, "k", "v1")
    r2 = put(rest, b, "k", "v2")

    r = server.request("DELETE", key_path(b, "k"))
    assert r.status == 204 and r.body == b"", r
    fails(404, rest.kv_get_buckets_keys, b, "k")
    assert "k" not in rest.kv_list_buckets_keys(b)["keys"]

    entries = history(server, b, "k")
    assert [(e["revision"], e["operation"]) for e in entries][:2] == [(r1, "put"), (r2, "put")], entries
    assert len(entries) == 3 and entries[2]["operation"] == "delete", entries
    assert entries[2]["revision"] > r2, entries
    assert [value_of(e) for e in entries[:2]] == [js("v1"), js("v2")], entries

    # a later put revives the key
    r3 = put(rest, b, "k", "v3")
    check_live(rest.kv_get_buckets_keys(b, "k"), "k", js("v3"), r3)

    put(rest, b, "keep", "stays")
    assert rest.kv_delete_buckets_keys(b, "k", purge=True) is None
    fails(404, rest.kv_get_buckets_keys, b, "k")
    assert history(server, b, "k") == [], "purge must remove every revision"
    assert rest.kv_list_buckets_keys(b) == {"keys": ["keep"], "count": 1}
    r = server.request("DELETE", key_path(b, "keep"), params={"purge": "true"})
    assert r.status == 204, r
    assert history(server, b, "keep") == []


def test_list_keys_filter(rest: IronflowClient, uid: str) -> None:
    b = f"{uid}-list"
    rest.kv_buckets({"name": b})
    keys = ["user.1", "user.2", "user.a.b", "user", "order.1", "order.2.x", "admin"]
    for k in keys:
        put(rest, b, k, k)
    put(rest, b, "user.gone", 0)
    rest.kv_delete_buckets_keys(b, "user.gone")

    def listed(flt: str | None) -> list[str]:
        out = rest.kv_list_buckets_keys(b, filter=flt)
        assert set(out) == {"keys", "count"} and out["count"] == len(out["keys"]), out
        assert len(set(out["keys"])) == len(out["keys"]), f"duplicate keys: {out}"
        return sorted(out["keys"])

    assert listed(None) == sorted(keys)
    assert listed("user.*") == ["user.1", "user.2"]
    assert listed("user.>") == ["user.1", "user.2", "user.a.b"]
    assert listed("*.1") == ["order.1", "user.1"]
    assert listed("*") == ["admin", "user"]
    assert listed(">") == sorted(keys)
    assert listed("order.*.x") == ["order.2.x"]
    assert listed("user.1") == ["user.1"]
    assert listed("nothing.*") == []


def test_history_is_bounded_and_ordered(server: Server, rest: IronflowClient, uid: str) -> None:
    b = f"{uid}-hist"
    rest.kv_buckets({"name": b, "history": 3})
    revs = [put(rest, b, "k", f"v{i}") for i in range(6)]
    put(rest, b, "other", "x")

    entries = history(server, b, "k")
    assert [e["revision"] for e in entries] == revs[-3:], entries
    assert [value_of(e) for e in entries] == [js(f"v{i}") for i in range(3, 6)], entries
    assert all(e["operation"] == "put" for e in entries), entries
    stamps = [ifconf.parse_ts(e["created_at"]) for e in entries]
    assert stamps == sorted(stamps), entries

    one = f"{uid}-hist1"
    rest.kv_buckets({"name": one})  # default history: 1
    put(rest, one, "k", "a")
    last = put(rest, one, "k", "b")
    entries = history(server, one, "k")
    assert [(e["revision"], value_of(e)) for e in entries] == [(last, js("b"))], entries
    check_bucket(rest.kv_get_buckets(one), history=1, values=1, bytes=len(js("b")))


def test_bucket_ttl_expires_values(rest: IronflowClient, uid: str) -> None:
    b = f"{uid}-ttl"
    rest.kv_buckets({"name": b, "ttl_seconds": 1})
    t0 = time.monotonic()
    r1 = put(rest, b, "k", "short-lived")
    check_live(rest.kv_get_buckets_keys(b, "k"), "k", js("short-lived"), r1)
    assert rest.kv_list_buckets_keys(b)["keys"] == ["k"]

    deadline = t0 + 6
    while True:
        try:
            rest.kv_get_buckets_keys(b, "k")
        except IronflowError as err:
            assert err.status_code == 404, err
            break
        assert time.monotonic() < deadline, "a value in a 1 s TTL bucket was still readable after 6 s"
        time.sleep(0.05)
    gone_after = time.monotonic() - t0
    assert gone_after >= 0.9, f"value vanished after {gone_after:.2f}s, before the 1 s TTL"
    assert rest.kv_list_buckets_keys(b)["keys"] == [], "an expired key must not be listed"

    # an expired key has no live value: create-only writes over it, and the new value lives again
    r2 = put(rest, b, "k", "again", if_none_match="*")
    assert r2 > r1
    check_live(rest.kv_get_buckets_keys(b, "k"), "k", js("again"), r2)


# ── the SDK's create-only consumer ───────────────────────────────────────────────────────────────


def test_command_dedup(server: Server, rest: IronflowClient, uid: str) -> None:
    b = f"{uid}-cmds"
    dedup = rest.command_dedup(b)
    assert isinstance(dedup, CommandDedup)

    claim = {"status": "claimed", "token": "tok-a"}
    assert dedup.try_claim("cmd-1", claim) is None, "the first claim must win"
    check_bucket(rest.kv_get_buckets(b), name=b, ttl_seconds=604800)  # created on first use, 7-day TTL
    assert dedup.try_claim("cmd-1", {"status": "claimed", "token": "tok-b"}) == claim
    # a retry recognises its own orphaned claim
    assert dedup.try_claim("cmd-1", claim, is_owner=lambda p: p.get("token") == "tok-a") is None

    dedup.finalize("cmd-1", {"status": "done", "result": 42})
    other = rest.command_dedup(b)  # a second instance: its bucket create gets 409, which it tolerates
    assert other.try_claim("cmd-1", {"status": "claimed", "token": "tok-c"}) == {"status": "done", "result": 42}

    # release lets the command be claimed again; releasing twice is fine
    assert dedup.try_claim("cmd-2", {"status": "claimed"}) is None
    dedup.release("cmd-2")
    dedup.release("cmd-2")
    assert other.try_claim("cmd-2", {"status": "claimed", "by": "other"}) is None
    assert dedup.try_claim("cmd-2", {"status": "claimed"}) == {"status": "claimed", "by": "other"}

    # the bucket vanishing under a ready instance: the claim's 404 recreates it and claims
    rest.kv_delete_buckets(b)
    assert dedup.try_claim("cmd-3", {"status": "claimed"}) is None
    assert rest.kv_list_buckets_keys(b)["keys"] == ["cmd-3"]

    # concurrent claims on one command id: exactly one winner, every loser sees the winner's claim
    n = 8
    outs = parallel(n, lambda i: server.rest().command_dedup(b).try_claim("cmd-race", {"status": "claimed", "w": i}))
    errors = [o for o in outs if isinstance(o, Exception)]
    assert not errors, errors
    winners = [i for i, o in enumerate(outs) if o is None]
    assert len(winners) == 1, f"claims: {outs}"
    assert all(o == {"status": "claimed", "w": winners[0]} for o in outs if o is not None), outs

    # no TTL when asked for none
    b0 = f"{uid}-cmds0"
    assert rest.command_dedup(b0, ttl_seconds=0).try_claim("c", {"s": 1}) is None
    check_bucket(rest.kv_get_buckets(b0), ttl_seconds=0)
