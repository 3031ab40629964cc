"""Emitting events (RPC binary, RPC Trigger, REST, Connect-JSON), trigger matching, idempotency, event queries."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import uuid

import pytest
from ironflow import IronflowClient, IronflowError
from ironflow.rpc import IronflowRPC, IronflowRPCError
from ironflow.rpc.v1 import GetRunRequest, ListRunsRequest, RunStatus, TriggerRequest

import ifconf
from ifconf import Server, assert_json_error, emit, emit_rest, emit_rpc, list_all_events, register

TERMINAL_RPC = {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}
TRANSPORTS = ["rpc", "rpc-trigger", "rest", "connect-json"]


def check_runs(rpc: IronflowRPC, event_id: str, run_ids: list[str], expected: dict[str, str]) -> None:
    """`expected` maps function id -> label; asserts exactly one fresh run per expected function."""
    assert len(run_ids) == len(set(run_ids)), f"duplicate run ids {run_ids}"
    by_fn: dict[str, str] = {}
    for rid in run_ids:
        run = rpc.runs.get(GetRunRequest(id=rid))
        assert run.id == rid
        assert run.event_id == event_id, run
        assert run.function_version == 1, run
        assert run.status not in TERMINAL_RPC, f"a new run must not be terminal: {run!r}"
        assert run.function_id not in by_fn, f"two runs for {run.function_id} from one event"
        by_fn[run.function_id] = rid
    got = sorted(expected[f] if f in expected else f"unexpected:{f}" for f in by_fn)
    assert got == sorted(expected.values()), f"runs were created for {got}, expected {sorted(expected.values())}"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_trigger_matching(server: Server, rpc: IronflowRPC, rest: IronflowClient, uid: str, transport: str) -> None:
    p = uid  # a unique first subject token isolates this test from every other function on the server
    fns = {
        f"fn-{uid}-a": ("A", f"{p}.order.created", ""),
        f"fn-{uid}-b": ("B", f"{p}.order.*", ""),
        f"fn-{uid}-c": ("C", f"{p}.order.>", ""),
        f"fn-{uid}-d": ("D", f"{p}.order.created", "event.data.amount > 100"),
    }
    for fid, (_, pattern, expr) in fns.items():
        register(rpc, fid, [(pattern, expr) if expr else pattern])
    label = {fid: v[0] for fid, v in fns.items()}

    def expect(*labels: str) -> dict[str, str]:
        return {fid: lab for fid, lab in label.items() if lab in labels}

    cases = [
        (f"{p}.order.created", {"amount": 50}, expect("A", "B", "C")),
        (f"{p}.order.created", {"amount": 500}, expect("A", "B", "C", "D")),
        (f"{p}.order.created.eu", {"amount": 500}, expect("C")),
        (f"{p}.order.updated", {"amount": 500}, expect("B", "C")),
        (f"{p}.order", {"amount": 500}, expect()),
        (f"{p}.user.signup", {"amount": 500}, expect()),
    ]
    for name, data, expected in cases:
        event_id, run_ids = emit(transport, server, rpc, name, data)
        assert event_id, f"{name}: no event id"
        check_runs(rpc, event_id, run_ids, expected)
        ev = rest.events_get(event_id)
        assert ev["id"] == event_id and ev["name"] == name, ev
        assert ev["data"] == data, ev
        assert sorted(ev["run_ids"]) == sorted(run_ids), ev


def test_cel_variables(server: Server, rpc: IronflowRPC, uid: str) -> None:
    p = uid
    fns = {
        f"fn-{uid}-data": (f"{p}.pay.*", 'data.tier == "gold"'),
        f"fn-{uid}-name": (f"{p}.pay.*", f'event.name == "{p}.pay.refund"'),
        f"fn-{uid}-id": (f"{p}.pay.*", 'event.id != ""'),
        f"fn-{uid}-and": (f"{p}.pay.*", 'event.data.amount >= 100 && data.currency == "EUR"'),
        f"fn-{uid}-nested": (f"{p}.pay.*", "event.data.customer.age > 17"),
    }
    for fid, trig in fns.items():
        register(rpc, fid, [trig])

    def fired(name: str, data: dict) -> set[str]:
        out = emit_rpc(rpc, name, data)
        fns_hit = {rpc.runs.get(GetRunRequest(id=r)).function_id for r in out.run_ids}
        assert len(fns_hit) == len(out.run_ids)
        return {f.removeprefix(f"fn-{uid}-") for f in fns_hit}

    assert fired(f"{p}.pay.charge", {"tier": "gold", "amount": 5, "currency": "EUR", "customer": {"age": 30}}) == {
        "data", "id", "nested"}
    assert fired(f"{p}.pay.refund", {"tier": "silver", "amount": 100, "currency": "EUR", "customer": {"age": 3}}) == {
        "name", "id", "and"}
    assert fired(f"{p}.pay.charge", {"tier": "gold", "amount": 100.5, "currency": "USD", "customer": {"age": 18}}) == {
        "data", "id", "nested"}


def test_cel_evaluation_error_is_no_match(server: Server, rpc: IronflowRPC, uid: str) -> None:
    """An expression that cannot be evaluated for one event (missing field) must not fail the emit."""
    plain, filtered = f"fn-{uid}-plain", f"fn-{uid}-filtered"
    register(rpc, plain, [f"{uid}.order.created"])
    register(rpc, filtered, [(f"{uid}.order.created", "event.data.amount > 100")])
    out = emit_rpc(rpc, f"{uid}.order.created", {"other": True})
    assert out.event_id
    assert [rpc.runs.get(GetRunRequest(id=r)).function_id for r in out.run_ids] == [plain]


def test_emit_data_value(server: Server, rpc: IronflowRPC, rest: IronflowClient, uid: str) -> None:
    fid = f"fn-{uid}"
    register(rpc, fid, [f"{uid}.list"])
    out = rpc.events.emit(TriggerRequest(event=f"{uid}.list", data_value=ifconf.value([1, "two", {"three": 3}])))
    assert len(out.run_ids) == 1
    assert rest.events_get(out.event_id)["data"] == [1, "two", {"three": 3}]

    r = server.connect_json("Emit", {"event": f"{uid}.list", "dataValue": "just a string"})
    assert r.status == 200, r
    body = r.json()
    assert len(body.get("runIds", [])) == 1, body
    assert rest.events_get(body["eventId"])["data"] == "just a string"


def test_emit_without_data(server: Server, rpc: IronflowRPC, rest: IronflowClient, uid: str) -> None:
    register(rpc, f"fn-{uid}", [f"{uid}.bare"])
    out = rpc.events.emit(TriggerRequest(event=f"{uid}.bare"))
    assert out.event_id and len(out.run_ids) == 1
    assert rest.events_get(out.event_id)["name"] == f"{uid}.bare"


# ── idempotency ──────────────────────────────────────────────────────────────────────────────────


def runs_for(rpc: IronflowRPC, fid: str) -> list:
    return list(rpc.runs.list(ListRunsRequest(function_id=fid, limit=100)).runs)


@pytest.mark.parametrize("transport", ["rpc", "rest", "connect-json", "rest-then-rpc"])
def test_idempotent_emit(server: Server, rpc: IronflowRPC, rest: IronflowClient, uid: str, transport: str) -> None:
    fid = f"fn-{uid}"
    name = f"{uid}.idem"
    key = f"idem-{uid}"
    register(rpc, fid, [name])

    def send(via: str) -> tuple[str, list[str]]:
        if via == "rpc":
            r = emit_rpc(rpc, name, {"n": 1}, idempotency_key=key)
            return r.event_id, list(r.run_ids)
        if via == "rest":
            r = emit_rest(server, name, {"n": 1}, idempotency_key=key)
            return r["event_id"], r["run_ids"]
        r = ifconf.emit_connect_json(server, name, {"n": 1}, idempotencyKey=key)
        return r["event_id"], r["run_ids"]

    vias = ["rest", "rpc", "rpc"] if transport == "rest-then-rpc" else [transport] * 3
    first = send(vias[0])
    assert len(first[1]) == 1
    for via in vias[1:]:
        again = send(via)
        assert again[0] == first[0], f"repeat with the same idempotency key made a new event: {first} vs {again}"
        assert sorted(again[1]) == sorted(first[1]), f"repeat returned different runs: {first} vs {again}"

    events = list_all_events(rest, name=name)
    assert [e["id"] for e in events] == [first[0]], events
    assert events[0].get("idempotency_key") == key, events[0]
    assert [r.id for r in runs_for(rpc, fid)] == first[1]

    # A different key is a different event.
    other = emit_rpc(rpc, name, {"n": 1}, idempotency_key=f"{key}-2")
    assert other.event_id != first[0] and len(other.run_ids) == 1 and other.run_ids[0] not in first[1]


# ── reading events back ──────────────────────────────────────────────────────────────────────────


def test_get_event_fields(server: Server, rpc: IronflowRPC, rest: IronflowClient, uid: str) -> None:
    register(rpc, f"fn-{uid}", [f"{uid}.full"])
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    out = emit_rest(
        server,
        f"{uid}.full",
        {"amount": 12.5, "tags": ["a", "b"], "nested": {"ok": True, "none": None}},
        metadata={"trace": uid},
        idempotency_key=f"k-{uid}",
        source=f"src-{uid}",
    )
    after = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)
    ev = rest.events_get(out["event_id"])
    assert ev["id"] == out["event_id"]
    assert ev["name"] == f"{uid}.full"
    assert ev["data"] == {"amount": 12.5, "tags": ["a", "b"], "nested": {"ok": True, "none": None}}
    assert ev["metadata"] == {"trace": uid}
    assert ev["source"] == f"src-{uid}"
    assert ev["idempotency_key"] == f"k-{uid}"
    assert isinstance(ev["processed"], bool)
    assert ev["run_ids"] == out["run_ids"] and len(out["run_ids"]) == 1
    for field in ("timestamp", "created_at"):
        assert before < ifconf.parse_ts(ev[field]) < after, (field, ev[field])

    # Same event fetched raw is plain JSON with the same content.
    r = server.request("GET", f"/api/v1/events/{out['event_id']}")
    assert r.status == 200 and r.json()["id"] == out["event_id"], r


def test_get_event_emitted_over_rpc(rpc: IronflowRPC, rest: IronflowClient, uid: str) -> None:
    out = emit_rpc(rpc, f"{uid}.viarpc", {"s": "x", "n": 3, "b": False, "l": [1, 2]}, metadata=ifconf.struct({"m": 1}))
    ev = rest.events_get(out.event_id)
    assert ev["name"] == f"{uid}.viarpc"
    assert ev["data"] == {"s": "x", "n": 3, "b": False, "l": [1, 2]}
    assert ev["metadata"] == {"m": 1}
    assert ev["run_ids"] == []
    assert isinstance(ev["source"], str)
    ifconf.parse_ts(ev["timestamp"])
    ifconf.parse_ts(ev["created_at"])


def test_unknown_event_is_404(server: Server, rest: IronflowClient) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(IronflowError) as exc:
        rest.events_get(missing)
    assert exc.value.status_code == 404 and exc.value.code == "not_found"
    assert_json_error(server.request("GET", f"/api/v1/events/{missing}"), 404)


def test_list_events_pagination_newest_first(rpc: IronflowRPC, rest: IronflowClient, uid: str) -> None:
    name = f"{uid}.paged"
    ids = [emit_rpc(rpc, name, {"i": i}).event_id for i in range(7)]
    pages = []
    cursor = None
    while True:
        page = rest.events_list(name=name, limit=3, cursor=cursor)
        pages.append(page)
        assert page["limit"] == 3, page
        assert page["count"] == len(page["events"]), page
        assert len(page["events"]) <= 3
        if len(pages) == 1:
            assert page["has_prev"] is False, page
        if not page["has_next"]:
            break
        cursor = page["next_cursor"]
        assert cursor, page
        assert len(pages) < 10, "pagination does not terminate"
    assert [len(p["events"]) for p in pages] == [3, 3, 1]
    seen = [e["id"] for p in pages for e in p["events"]]
    assert seen == list(reversed(ids)), "events must be listed newest first, each exactly once"
    assert [e["data"]["i"] for p in pages for e in p["events"]] == [6, 5, 4, 3, 2, 1, 0]


def test_list_all_events_sees_each_once(rpc: IronflowRPC, rest: IronflowClient, uid: str) -> None:
    mine = {emit_rpc(rpc, f"{uid}.walk.{i % 2}", {"i": i}).event_id for i in range(5)}
    seen = [e["id"] for e in list_all_events(rest, limit=7)]
    assert len(seen) == len(set(seen)), "an event appeared on two pages"
    assert mine <= set(seen)


def test_list_events_name_names_source_filters(server: Server, rpc: IronflowRPC, rest: IronflowClient, uid: str) -> None:
    a, b, c = f"{uid}.f.a", f"{uid}.f.b", f"{uid}.f.c"
    ids = {a: set(), b: set(), c: set()}
    for name, n in ((a, 2), (b, 3), (c, 1)):
        for i in range(n):
            ids[name].add(emit_rest(server, name, {"i": i}, source=f"src-{uid}-{name[-1]}")["event_id"])

    got = list_all_events(rest, name=a)
    assert {e["id"] for e in got} == ids[a] and all(e["name"] == a for e in got)

    got = list_all_events(rest, names=f"{a},{b}")
    assert {e["id"] for e in got} == ids[a] | ids[b], got

    got = list_all_events(rest, source=f"src-{uid}-c")
    assert {e["id"] for e in got} == ids[c], got

    assert list_all_events(rest, name=f"{uid}.f.none") == []


def test_list_events_since_until(rpc: IronflowRPC, rest: IronflowClient, uid: str) -> None:
    name = f"{uid}.timed"
    ids = [emit_rpc(rpc, name, {"i": i}).event_id for i in range(3)]
    evs = {i: rest.events_get(i) for i in ids}
    ts = [ifconf.parse_ts(evs[i]["timestamp"]) for i in ids]
    assert ts == sorted(ts), f"timestamps go backwards: {ts}"
    hour = dt.timedelta(hours=1)
    fmt = ifconf.fmt_ts

    def listed(**kw: str) -> set[str]:
        return {e["id"] for e in list_all_events(rest, name=name, **kw)}

    assert listed(since=fmt(ts[0] - hour)) == set(ids)
    assert listed(since=fmt(ts[-1] + hour)) == set()
    assert listed(until=fmt(ts[-1] + hour)) == set(ids)
    assert listed(until=fmt(ts[0] - hour)) == set()
    assert listed(since=fmt(ts[0] - hour), until=fmt(ts[-1] + hour)) == set(ids)
    # Offset form of the same instant (RFC 3339 with +00:00, no fraction).
    assert listed(since=(ts[0] - hour).replace(microsecond=0).isoformat()) == set(ids)
    # A split point strictly between the first and the last event, when the clock moved between them.
    # (Timestamps are compared at microsecond precision; 4 µs of margin keeps truncation out of the way.)
    if ts[-1] - ts[0] >= dt.timedelta(microseconds=4):
        mid = fmt(ts[0] + (ts[-1] - ts[0]) / 2)
        assert ids[0] not in listed(since=mid) and ids[-1] in listed(since=mid)
        assert ids[0] in listed(until=mid) and ids[-1] not in listed(until=mid)


def test_list_events_bad_time_filter_is_400(server: Server) -> None:
    r = server.request("GET", "/api/v1/events", params={"since": "not-a-time"})
    assert_json_error(r, 400, mentions=("since", "time", "timestamp"))


def test_event_names(server: Server, rpc: IronflowRPC, rest: IronflowClient, uid: str) -> None:
    for name, n in ((f"{uid}.n.x", 3), (f"{uid}.n.y", 1)):
        for i in range(n):
            emit_rpc(rpc, name, {"i": i})
    body = rest.events_list_names()
    assert isinstance(body["names"], list)
    assert isinstance(body["scanned"], int) and isinstance(body["scan_cap"], int)
    assert isinstance(body["truncated"], bool)
    assert body["scanned"] <= body["scan_cap"] or body["truncated"], body
    counts = {n["name"]: n["count"] for n in body["names"]}
    assert len(counts) == len(body["names"]), "a name is listed twice"
    assert not body["truncated"], f"this small server should not hit the scan cap: {body}"
    assert counts.get(f"{uid}.n.x") == 3 and counts.get(f"{uid}.n.y") == 1, counts

    now = dt.datetime.now(dt.timezone.utc)
    future = rest.events_list_names(since=ifconf.fmt_ts(now + dt.timedelta(hours=1)))
    assert f"{uid}.n.x" not in {n["name"] for n in future["names"]}


@pytest.mark.parametrize("cursor", ["not-a-cursor", "!!!", "eyJ4IjoxfQ"])
def test_bad_cursor_is_400(server: Server, rest: IronflowClient, cursor: str) -> None:
    with pytest.raises(IronflowError) as exc:
        rest.events_list(cursor=cursor)
    assert exc.value.status_code == 400
    assert "cursor" in str(exc.value).lower()
    assert_json_error(server.request("GET", "/api/v1/events", params={"cursor": cursor}), 400, mentions=("cursor",))


# ── rejected writes ──────────────────────────────────────────────────────────────────────────────


def all_event_ids(rest: IronflowClient) -> list[str]:
    return [e["id"] for e in list_all_events(rest, limit=100)]


def test_payload_too_large_rest(server: Server, rest: IronflowClient, uid: str) -> None:
    before = all_event_ids(rest)
    name = f"{uid}.big"
    body = json.dumps({"name": name, "data": {"blob": "x" * (1024 * 1024 + 10)}}).encode()
    r = server.request("POST", "/api/v1/events", raw=body)
    assert_json_error(r, 413)
    assert all_event_ids(rest) == before, "a rejected (413) event was stored"

    # Just under the limit is fine.
    ok = emit_rest(server, name, {"blob": "y" * (900 * 1024)})
    assert rest.events_get(ok["event_id"])["data"]["blob"] == "y" * (900 * 1024)


def test_payload_too_large_rpc(rpc: IronflowRPC, rest: IronflowClient, uid: str) -> None:
    before = all_event_ids(rest)
    # Incompressible, so it is over 1 MiB both on the wire (gzip) and decoded.
    blob = base64.b64encode(os.urandom(2 * 1024 * 1024)).decode()
    with pytest.raises(IronflowRPCError):
        emit_rpc(rpc, f"{uid}.bigrpc", {"blob": blob})
    assert all_event_ids(rest) == before, "a rejected oversized Emit was stored"


@pytest.mark.parametrize(
    "raw",
    [b'{"name": "x.y", "data": ', b"not json at all", b'{"name": "x.y",}', b""],
    ids=["truncated", "garbage", "trailing-comma", "empty"],
)
def test_malformed_json_is_400(server: Server, rest: IronflowClient, raw: bytes) -> None:
    before = all_event_ids(rest)
    r = server.request("POST", "/api/v1/events", raw=raw)
    assert_json_error(r, 400)
    assert all_event_ids(rest) == before


@pytest.mark.parametrize(
    "body,mentions",
    [
        ({"data": {}}, ("name",)),
        ({"name": "", "data": {}}, ("name",)),
        ({"name": 5, "data": {}}, ("name", "string", "type")),
        (["name", "data"], ("object", "map", "struct", "expected", "invalid")),
    ],
    ids=["missing-name", "empty-name", "name-not-string", "array-body"],
)
def test_bad_event_body_is_4xx(server: Server, rest: IronflowClient, body: object, mentions: tuple[str, ...]) -> None:
    before = all_event_ids(rest)
    r = server.request("POST", "/api/v1/events", json_body=body)
    assert_json_error(r, (400, 422), mentions=mentions)
    assert all_event_ids(rest) == before


def test_rpc_emit_empty_event_name_invalid(rpc: IronflowRPC) -> None:
    with pytest.raises(IronflowRPCError) as exc:
        rpc.events.emit(TriggerRequest(event="", data=ifconf.struct({"a": 1})))
    assert exc.value.code == "invalid_argument"
