"""Runs created by events: GetRun / ListRuns / GetRunSteps / CancelRun over RPC and the REST runs routes."""

from __future__ import annotations

import uuid

import pytest
from ironflow import IronflowError
from ironflow.rpc import IronflowRPC, IronflowRPCError
from ironflow.rpc.v1 import (
    CancelRunRequest,
    GetRunRequest,
    GetRunStepsRequest,
    ListRunsRequest,
    RunStatus,
)

from ifconf import TERMINAL_REST, Server, assert_json_error, emit_rpc, register

TERMINAL_RPC = {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}


def rest_runs(server: Server, **params: object) -> list[dict]:
    """All runs matching the REST filters, following next_cursor."""
    out: list[dict] = []
    cursor = None
    for _ in range(200):
        r = server.request("GET", "/api/v1/runs", params={**params, "cursor": cursor})
        assert r.status == 200, r
        body = r.json()
        assert isinstance(body.get("runs"), list), body
        assert isinstance(body.get("has_next"), bool), body
        out.extend(body["runs"])
        if not body["has_next"]:
            return out
        cursor = body.get("next_cursor")
        assert cursor, f"has_next without next_cursor: {body}"
    raise AssertionError("REST runs pagination did not end")


def rpc_runs(rpc: IronflowRPC, limit: int = 100, **filters: object) -> list:
    out = []
    cursor = ""
    for _ in range(200):
        page = rpc.runs.list(ListRunsRequest(limit=limit, cursor=cursor, **filters))
        assert len(page.runs) <= limit
        out.extend(page.runs)
        if not page.next_cursor:
            return out
        cursor = page.next_cursor
    raise AssertionError("ListRuns pagination did not end")


@pytest.fixture
def two_fns(rpc: IronflowRPC, uid: str) -> tuple[str, str, str]:
    name = f"{uid}.run.e"
    f1, f2 = f"fn-{uid}-1", f"fn-{uid}-2"
    register(rpc, f1, [name])
    register(rpc, f2, [f"{uid}.run.*"])
    return name, f1, f2


def test_get_run_rpc_and_rest(server: Server, rpc: IronflowRPC, two_fns: tuple[str, str, str]) -> None:
    name, f1, f2 = two_fns
    out = emit_rpc(rpc, name, {"x": 1})
    assert len(out.run_ids) == 2
    fns = set()
    for rid in out.run_ids:
        run = rpc.runs.get(GetRunRequest(id=rid))
        assert (run.id, run.event_id, run.function_version) == (rid, out.event_id, 1), run
        assert run.status not in TERMINAL_RPC, run
        fns.add(run.function_id)

        r = server.request("GET", f"/api/v1/runs/{rid}")
        assert r.status == 200, r
        body = r.json()
        assert body["id"] == rid and body["event_id"] == out.event_id, body
        assert body["function_id"] == run.function_id and body["function_version"] == 1, body
        assert isinstance(body["status"], str) and body["status"] not in TERMINAL_REST, body
    assert fns == {f1, f2}


def test_list_runs_filters_rpc(rpc: IronflowRPC, two_fns: tuple[str, str, str]) -> None:
    name, f1, f2 = two_fns
    events = [emit_rpc(rpc, name, {"i": i}) for i in range(3)]
    all_ids = {r for e in events for r in e.run_ids}
    assert len(all_ids) == 6

    by_f1 = rpc_runs(rpc, function_id=f1)
    assert len(by_f1) == 3 and all(r.function_id == f1 for r in by_f1)
    assert {r.id for r in by_f1} | {r.id for r in rpc_runs(rpc, function_id=f2)} == all_ids

    by_event = rpc_runs(rpc, event_id=events[1].event_id)
    assert {r.id for r in by_event} == set(events[1].run_ids)
    assert {r.function_id for r in by_event} == {f1, f2}

    both = rpc_runs(rpc, function_id=f1, event_id=events[2].event_id)
    assert len(both) == 1 and both[0].function_id == f1 and both[0].event_id == events[2].event_id

    victim = by_f1[0].id
    cancelled = rpc.runs.cancel(CancelRunRequest(id=victim, reason="conformance"))
    assert cancelled.status == RunStatus.CANCELLED
    assert [r.id for r in rpc_runs(rpc, function_id=f1, status=RunStatus.CANCELLED)] == [victim]
    assert [r.id for r in rpc_runs(rpc, function_id=f1, statuses=[RunStatus.CANCELLED])] == [victim]
    assert rpc_runs(rpc, function_id=f2, status=RunStatus.CANCELLED) == []


def test_list_runs_filters_rest(server: Server, rpc: IronflowRPC, two_fns: tuple[str, str, str]) -> None:
    name, f1, f2 = two_fns
    events = [emit_rpc(rpc, name, {"i": i}) for i in range(3)]

    by_f1 = rest_runs(server, function_id=f1)
    assert len(by_f1) == 3 and all(r["function_id"] == f1 for r in by_f1)
    for r in by_f1:
        assert r["function_version"] == 1 and r["status"] not in TERMINAL_REST, r

    by_event = rest_runs(server, event_id=events[0].event_id)
    assert {r["id"] for r in by_event} == set(events[0].run_ids)

    # New runs share one (non-terminal) status; filtering by it finds them, and stops finding a cancelled one.
    live = {r["status"] for r in by_f1}
    assert len(live) == 1, by_f1
    live_status = live.pop()
    assert {r["id"] for r in rest_runs(server, function_id=f1, status=live_status)} == {r["id"] for r in by_f1}

    victim = by_f1[-1]["id"]
    rpc.runs.cancel(CancelRunRequest(id=victim))
    assert [r["id"] for r in rest_runs(server, function_id=f1, status="cancelled")] == [victim]
    assert rest_runs(server, function_id=f2, status="cancelled") == []
    assert {r["id"] for r in rest_runs(server, function_id=f1, status=live_status)} == {
        r["id"] for r in by_f1 if r["id"] != victim}


def test_list_runs_pagination(server: Server, rpc: IronflowRPC, uid: str) -> None:
    fid = f"fn-{uid}"
    register(rpc, fid, [f"{uid}.pg"])
    ids = {emit_rpc(rpc, f"{uid}.pg", {"i": i}).run_ids[0] for i in range(5)}

    seen = [r.id for r in rpc_runs(rpc, limit=2, function_id=fid)]
    assert len(seen) == len(set(seen)) and set(seen) == ids

    pages = []
    cursor = None
    while True:
        r = server.request("GET", "/api/v1/runs", params={"function_id": fid, "limit": 2, "cursor": cursor})
        assert r.status == 200, r
        body = r.json()
        assert len(body["runs"]) <= 2, body
        pages.append([x["id"] for x in body["runs"]])
        if not body["has_next"]:
            break
        cursor = body["next_cursor"]
        assert len(pages) < 10
    flat = [i for p in pages for i in p]
    assert len(flat) == len(set(flat)) and set(flat) == ids and len(pages) == 3, pages


def test_get_run_steps_empty_for_new_run(rpc: IronflowRPC, uid: str) -> None:
    register(rpc, f"fn-{uid}", [f"{uid}.steps"])
    out = emit_rpc(rpc, f"{uid}.steps", {})
    steps = rpc.runs.get_steps(GetRunStepsRequest(run_id=out.run_ids[0]))
    assert list(steps.steps) == []


def test_cancel_run(server: Server, rpc: IronflowRPC, uid: str) -> None:
    fid = f"fn-{uid}"
    register(rpc, fid, [f"{uid}.cancel"])
    out = emit_rpc(rpc, f"{uid}.cancel", {})
    rid = out.run_ids[0]
    res = rpc.runs.cancel(CancelRunRequest(id=rid, reason="no longer needed"))
    assert res.id == rid and res.status == RunStatus.CANCELLED
    got = rpc.runs.get(GetRunRequest(id=rid))
    assert got.status == RunStatus.CANCELLED and got.function_id == fid and got.event_id == out.event_id
    r = server.request("GET", f"/api/v1/runs/{rid}")
    assert r.status == 200 and r.json()["status"] == "cancelled", r

    # Connect-JSON view of the same run uses the proto enum name.
    r = server.connect_json("GetRun", {"id": rid})
    assert r.status == 200 and r.json()["status"] == "RUN_STATUS_CANCELLED", r


def test_unknown_run(server: Server, rpc: IronflowRPC) -> None:
    missing = str(uuid.uuid4())
    for call in (
        lambda: rpc.runs.get(GetRunRequest(id=missing)),
        lambda: rpc.runs.cancel(CancelRunRequest(id=missing)),
    ):
        with pytest.raises(IronflowRPCError) as exc:
            call()
        assert exc.value.code == "not_found", exc.value
    assert_json_error(server.request("GET", f"/api/v1/runs/{missing}"), 404)
    assert_json_error(server.connect_json("GetRun", {"id": missing}), 404, code="not_found")
    with pytest.raises(IronflowError) as exc:
        server.rest().request("GET", f"/api/v1/runs/{missing}")
    assert exc.value.status_code == 404 and exc.value.code == "not_found"
