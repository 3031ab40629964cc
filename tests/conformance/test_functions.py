"""Function registration (binary proto via the SDK, and the pull worker's Connect-JSON), versioning, listing."""

from __future__ import annotations

import pytest
from ironflow import IronflowError
from ironflow.rpc import IronflowRPC, IronflowRPCError
from ironflow.rpc.v1 import (
    ConcurrencyConfig,
    ExecutionMode,
    FunctionStatus,
    GetFunctionRequest,
    GetRunRequest,
    ListFunctionsRequest,
    RetryConfig,
)

import ifconf
from ifconf import Server, assert_json_error, register


def list_all_functions_rpc(rpc: IronflowRPC, limit: int = 2, max_pages: int = 500) -> list:
    seen = []
    cursor = ""
    for _ in range(max_pages):
        page = rpc.functions.list(ListFunctionsRequest(limit=limit, cursor=cursor))
        assert len(page.functions) <= limit, page
        seen.extend(page.functions)
        if not page.next_cursor:
            return seen
        cursor = page.next_cursor
    raise AssertionError("ListFunctions pagination did not end")


def test_register_get_list_rpc(server: Server, rpc: IronflowRPC, uid: str) -> None:
    fid = f"fn-{uid}"
    resp = register(
        rpc,
        fid,
        [f"{uid}.order.created", (f"{uid}.order.updated", "event.data.amount > 10")],
        description="conformance",
        retry=RetryConfig(max_attempts=3, initial_delay_ms=1000),
        timeout_ms=30000,
        concurrency=ConcurrencyConfig(limit=2, key="event.data.cid"),
        metadata={"team": "payments", "n": 1},
    )
    assert resp.created is True
    fn = resp.function
    assert fn.id == fid and fn.name == fid
    assert fn.version == 1
    assert fn.status == FunctionStatus.ACTIVE

    got = rpc.functions.get(GetFunctionRequest(id=fid))
    assert got.id == fid and got.version == 1 and got.status == FunctionStatus.ACTIVE
    assert got.description == "conformance"
    assert [(t.event, t.expression) for t in got.triggers] == [
        (f"{uid}.order.created", ""),
        (f"{uid}.order.updated", "event.data.amount > 10"),
    ]
    assert got.preferred_mode == ExecutionMode.PULL
    assert got.timeout_ms == 30000
    assert got.retry is not None and got.retry.max_attempts == 3 and got.retry.initial_delay_ms == 1000
    assert got.concurrency is not None and got.concurrency.limit == 2 and got.concurrency.key == "event.data.cid"
    assert got.metadata is not None and got.metadata.to_python() == {"team": "payments", "n": 1}

    listed = [f for f in list_all_functions_rpc(rpc, limit=100) if f.id == fid]
    assert len(listed) == 1 and listed[0].version == 1


def test_list_functions_rpc_pagination(server: Server, rpc: IronflowRPC, uid: str) -> None:
    ids = [f"fn-{uid}-{i}" for i in range(5)]
    for fid in ids:
        register(rpc, fid, [f"{uid}.page.e"])
    seen = [f.id for f in list_all_functions_rpc(rpc, limit=2)]
    assert len(seen) == len(set(seen)), f"a function was listed twice across pages: {seen}"
    for fid in ids:
        assert fid in seen


def test_register_get_list_rest(server: Server, rpc: IronflowRPC, uid: str) -> None:
    fid = f"fn-{uid}"
    register(rpc, fid, [f"{uid}.a", (f"{uid}.b", "data.x == 1")])

    r = server.request("GET", "/api/v1/functions")
    assert r.status == 200, r
    body = r.json()
    assert isinstance(body.get("functions"), list), body
    mine = [f for f in body["functions"] if f.get("id") == fid]
    assert len(mine) == 1, f"{fid} not listed exactly once in {body!r}"

    r = server.request("GET", f"/api/v1/functions/{fid}")
    assert r.status == 200, r
    one = r.json()
    for f in (mine[0], one):
        assert f["id"] == fid and f["name"] == fid, f
        assert f["version"] == 1, f
        assert f["status"] == "active", f
        assert isinstance(f["triggers"], list) and len(f["triggers"]) == 2, f
        assert f["triggers"][0]["event"] == f"{uid}.a", f
        assert f["triggers"][1]["event"] == f"{uid}.b", f
        assert f["triggers"][1].get("expression") == "data.x == 1", f


def test_rest_unknown_function_404(server: Server, uid: str) -> None:
    r = server.request("GET", f"/api/v1/functions/fn-missing-{uid}")
    assert_json_error(r, 404)


def test_rpc_unknown_function_not_found(rpc: IronflowRPC, uid: str) -> None:
    with pytest.raises(IronflowRPCError) as exc:
        rpc.functions.get(GetFunctionRequest(id=f"fn-missing-{uid}"))
    assert exc.value.code == "not_found", exc.value


def test_version_bump_rules(server: Server, rpc: IronflowRPC, uid: str) -> None:
    fid = f"fn-{uid}"
    first = register(rpc, fid, [f"{uid}.a"], metadata={"k": "v"})
    assert (first.created, first.function.version) == (True, 1)

    same = register(rpc, fid, [f"{uid}.a"], metadata={"k": "v"})
    assert (same.created, same.function.version) == (False, 1), "identical re-registration must not bump"

    # (`created` on a changed definition is not pinned down by the contract; only the version is asserted.)
    triggers_changed = register(rpc, fid, [f"{uid}.a", f"{uid}.b"], metadata={"k": "v"})
    assert triggers_changed.function.version == 2

    again = register(rpc, fid, [f"{uid}.a", f"{uid}.b"], metadata={"k": "v"})
    assert (again.created, again.function.version) == (False, 2)

    metadata_changed = register(rpc, fid, [f"{uid}.a", f"{uid}.b"], metadata={"k": "w"})
    assert metadata_changed.function.version == 3

    expression_changed = register(rpc, fid, [f"{uid}.a", (f"{uid}.b", "data.n > 1")], metadata={"k": "w"})
    assert expression_changed.function.version == 4

    got = rpc.functions.get(GetFunctionRequest(id=fid))
    assert got.version == 4 and got.status == FunctionStatus.ACTIVE
    assert [(t.event, t.expression) for t in got.triggers] == [(f"{uid}.a", ""), (f"{uid}.b", "data.n > 1")]
    assert got.metadata is not None and got.metadata.to_python() == {"k": "w"}

    r = server.request("GET", f"/api/v1/functions/{fid}")
    assert r.status == 200 and r.json()["version"] == 4, r

    # Runs are stamped with the version current at emit time.
    out = ifconf.emit_rpc(rpc, f"{uid}.a", {"n": 0})
    assert len(out.run_ids) == 1
    assert rpc.runs.get(GetRunRequest(id=out.run_ids[0])).function_version == 4

    # Listing shows one entry (the latest version), not one per version.
    r = server.request("GET", "/api/v1/functions")
    mine = [f for f in r.json()["functions"] if f["id"] == fid]
    assert len(mine) == 1 and mine[0]["version"] == 4, mine


@pytest.mark.parametrize(
    "case",
    [
        "empty-id",
        "pattern-double-dot",
        "pattern-gt-not-last",
        "pattern-star-inside-token",
        "bad-cel",
        "push-non-http-endpoint",
    ],
)
def test_register_invalid_argument(server: Server, rpc: IronflowRPC, uid: str, case: str) -> None:
    fid = f"fn-{uid}"
    kwargs: dict = {}
    triggers: list = [f"{uid}.order.created"]
    mentions: tuple[str, ...]
    if case == "empty-id":
        fid, mentions = "", ("id",)
    elif case == "pattern-double-dot":
        triggers, mentions = [f"{uid}.order..created"], ("order..created", "trigger", "event", "pattern")
    elif case == "pattern-gt-not-last":
        triggers, mentions = [f"{uid}.order.>.x"], ("order.>.x", "trigger", "event", "pattern", ">")
    elif case == "pattern-star-inside-token":
        triggers, mentions = [f"{uid}.ord*er"], ("ord*er", "trigger", "event", "pattern", "*")
    elif case == "bad-cel":
        triggers = [(f"{uid}.order.created", "event.data.amount >")]
        mentions = ("expression", "cel", "parse", "syntax")
    else:
        kwargs = {"preferred_mode": ExecutionMode.PUSH, "endpoint_url": "ftp://example.com/hook"}
        mentions = ("endpoint", "url", "http")
    with pytest.raises(IronflowRPCError) as exc:
        register(rpc, fid, triggers, **kwargs)
    assert exc.value.code == "invalid_argument", exc.value
    message = str(exc.value).lower()
    assert any(m.lower() in message for m in mentions), f"message should name the problem {mentions}: {message!r}"
    if fid:
        with pytest.raises(IronflowRPCError) as exc:
            rpc.functions.get(GetFunctionRequest(id=fid))
        assert exc.value.code == "not_found", "a rejected registration must not be stored"


def test_register_push_http_endpoint_ok(rpc: IronflowRPC, uid: str) -> None:
    fid = f"fn-{uid}"
    resp = register(
        rpc, fid, [f"{uid}.push"], preferred_mode=ExecutionMode.PUSH, endpoint_url="https://example.com/ironflow"
    )
    assert resp.created and resp.function.version == 1
    assert resp.function.preferred_mode == ExecutionMode.PUSH
    assert resp.function.endpoint_url == "https://example.com/ironflow"


@pytest.mark.parametrize("pattern", ["{u}.order.*", "{u}.order.>", "{u}.*.created", "{u}.>", "{u}.a-b_c.d"])
def test_register_valid_patterns(rpc: IronflowRPC, uid: str, pattern: str) -> None:
    resp = register(rpc, f"fn-{uid}", [pattern.format(u=uid)])
    assert resp.created and resp.function.version == 1


def test_connect_json_invalid_argument_shape(server: Server, uid: str) -> None:
    r = server.connect_json("RegisterFunction", {"id": "", "triggers": [{"event": f"{uid}.x"}]})
    assert_json_error(r, 400, code="invalid_argument", mentions=("id",))


# ── the pull worker's hand-built Connect-JSON registration ────────────────────────────────────────


def worker_body(fid: str, event: str) -> dict:
    return {
        "id": fid,
        "name": fid,
        "triggers": [{"event": event}],
        "preferredMode": "EXECUTION_MODE_PULL",
        "metadata": {"__ironflow_code_hash": "aaa9402664f1a41f"},
        "retry": {"maxAttempts": 3, "initialDelayMs": 1000},
        "timeoutMs": 30000,
        "concurrency": {"limit": 2, "key": "event.data.cid"},
    }


def test_worker_connect_json_registration(server: Server, rpc: IronflowRPC, uid: str) -> None:
    fid = f"order-proc-{uid}"
    body = worker_body(fid, f"{uid}.order.created")
    r = server.connect_json("RegisterFunction", body)
    assert r.status == 200, r
    assert r.content_type.startswith("application/json"), r
    out = r.json()
    assert out["function"]["version"] == 1, out
    assert out["function"]["id"] == fid, out
    assert out.get("created") is True, out

    # The worker re-sends the same body on every (re)start: no new version.
    r = server.connect_json("RegisterFunction", body)
    assert r.status == 200, r
    assert r.json()["function"]["version"] == 1, r
    assert r.json().get("created", False) is False, r

    got = rpc.functions.get(GetFunctionRequest(id=fid))
    assert got.version == 1
    assert got.preferred_mode == ExecutionMode.PULL
    assert got.timeout_ms == 30000
    assert got.retry.max_attempts == 3 and got.retry.initial_delay_ms == 1000
    assert got.concurrency.limit == 2 and got.concurrency.key == "event.data.cid"
    assert got.metadata.to_python() == {"__ironflow_code_hash": "aaa9402664f1a41f"}
    assert [t.event for t in got.triggers] == [f"{uid}.order.created"]

    # A new code hash (the handler changed) is a new version.
    body["metadata"]["__ironflow_code_hash"] = "bbb9402664f1a41f"
    r = server.connect_json("RegisterFunction", body)
    assert r.status == 200 and r.json()["function"]["version"] == 2, r


def test_connect_json_registration_snake_case(server: Server, rpc: IronflowRPC, uid: str) -> None:
    fid = f"order-proc-{uid}"
    body = {
        "id": fid,
        "name": fid,
        "triggers": [{"event": f"{uid}.order.created", "expression": "event.data.amount > 1"}],
        "preferred_mode": "EXECUTION_MODE_PULL",
        "metadata": {"__ironflow_code_hash": "aaa9402664f1a41f"},
        "retry": {"max_attempts": 5, "initial_delay_ms": 250},
        "timeout_ms": 12000,
        "concurrency": {"limit": 3, "key": "event.data.cid"},
    }
    r = server.connect_json("RegisterFunction", body)
    assert r.status == 200, r
    assert r.json()["function"]["version"] == 1, r
    got = rpc.functions.get(GetFunctionRequest(id=fid))
    assert got.preferred_mode == ExecutionMode.PULL
    assert got.timeout_ms == 12000
    assert got.retry.max_attempts == 5 and got.retry.initial_delay_ms == 250
    assert got.concurrency.limit == 3
    assert [(t.event, t.expression) for t in got.triggers] == [(f"{uid}.order.created", "event.data.amount > 1")]


def test_connect_json_get_function_and_not_found(server: Server, uid: str) -> None:
    fid = f"order-proc-{uid}"
    assert server.connect_json("RegisterFunction", worker_body(fid, f"{uid}.e")).status == 200
    r = server.connect_json("GetFunction", {"id": fid})
    assert r.status == 200, r
    fn = r.json()
    assert fn["id"] == fid and fn["version"] == 1 and fn["status"] == "FUNCTION_STATUS_ACTIVE", fn
    r = server.connect_json("GetFunction", {"id": f"missing-{uid}"})
    assert_json_error(r, 404, code="not_found")


def test_sdk_rest_has_no_function_surface_but_raw_rest_404_is_json(server: Server) -> None:
    # IronflowClient's generic request() escape hatch goes through the SDK's REST error parsing.
    with pytest.raises(IronflowError) as exc:
        server.rest().request("GET", "/api/v1/functions/definitely-missing-fn")
    assert exc.value.status_code == 404 and exc.value.code == "not_found"
