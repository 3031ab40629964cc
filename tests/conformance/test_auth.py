"""API-key authentication and environment selection."""

from __future__ import annotations

import pytest
from ironflow import IronflowError
from ironflow.rpc import IronflowRPCError
from ironflow.rpc.v1 import GetFunctionRequest, ListFunctionsRequest, ListRunsRequest, TriggerRequest

import ifconf
from ifconf import SERVICE, Server, assert_json_error

WRONG_KEY = "ifkey_" + "0" * 40

PROTECTED_REST = [
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/events/names"),
    ("GET", "/api/v1/functions"),
    ("GET", "/api/v1/runs"),
]


@pytest.mark.parametrize("method,path", PROTECTED_REST)
@pytest.mark.parametrize("key", ["missing", "wrong", "not-bearer"])
def test_rest_rejects_missing_or_wrong_key(server: Server, method: str, path: str, key: str) -> None:
    if key == "missing":
        r = server.request(method, path, auth=False)
    elif key == "wrong":
        r = server.request(method, path, auth=WRONG_KEY)
    else:
        r = server.request(method, path, auth=False, headers={"Authorization": f"Basic {server.api_key}"})
    body = assert_json_error(r, 401, code="unauthenticated")
    assert isinstance(body.get("message"), str) and body["message"], body
    assert isinstance(body.get("error"), str) and body["error"], body


def test_rest_post_event_rejected_without_key_writes_nothing(server: Server, uid: str) -> None:
    name = f"{uid}.auth.probe"
    r = server.request("POST", "/api/v1/events", json_body={"name": name, "data": {}}, auth=False)
    assert_json_error(r, 401, code="unauthenticated")
    r = server.request("POST", "/api/v1/events", json_body={"name": name, "data": {}}, auth=WRONG_KEY)
    assert_json_error(r, 401, code="unauthenticated")
    assert server.rest().events_list(name=name)["events"] == []


def test_sdk_rest_client_raises_unauthenticated(server: Server) -> None:
    for key in (None, WRONG_KEY):
        with pytest.raises(IronflowError) as exc:
            server.rest(api_key=key).events_list(limit=1)
        assert exc.value.status_code == 401
        assert exc.value.code == "unauthenticated"


@pytest.mark.parametrize("key", [None, WRONG_KEY])
def test_rpc_rejects_missing_or_wrong_key(server: Server, uid: str, key: str | None) -> None:
    with server.rpc(api_key=key) as rpc:
        for call in (
            lambda: rpc.functions.list(ListFunctionsRequest()),
            lambda: rpc.functions.get(GetFunctionRequest(id=f"fn-{uid}")),
            lambda: rpc.runs.list(ListRunsRequest()),
            lambda: rpc.events.emit(TriggerRequest(event=f"{uid}.auth.rpc")),
        ):
            with pytest.raises(IronflowRPCError) as exc:
                call()
            assert exc.value.code == "unauthenticated", exc.value
    # The rejected Emit stored nothing.
    assert server.rest().events_list(name=f"{uid}.auth.rpc")["events"] == []


def test_connect_json_unauthenticated_error_shape(server: Server) -> None:
    r = server.request("POST", f"{SERVICE}/ListFunctions", json_body={}, auth=False)
    assert_json_error(r, 401, code="unauthenticated")


# ── environments ─────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("header", ["X-Ironflow-Environment", "X-Ironflow-Environment-ID"])
def test_default_environment_header_accepted(server: Server, header: str) -> None:
    r = server.request("GET", "/api/v1/events", params={"limit": 1}, headers={header: "default"})
    assert r.status == 200, r


@pytest.mark.parametrize("header", ["X-Ironflow-Environment", "X-Ironflow-Environment-ID"])
def test_unknown_environment_is_404(server: Server, uid: str, header: str) -> None:
    env = f"no-such-env-{uid}"
    for method, path, body in (
        ("GET", "/api/v1/events", None),
        ("GET", "/api/v1/functions", None),
        ("POST", "/api/v1/events", {"name": f"{uid}.env.probe", "data": {}}),
    ):
        r = server.request(method, path, json_body=body, headers={header: env})
        assert_json_error(r, 404, code="not_found")
    assert server.rest().events_list(name=f"{uid}.env.probe")["events"] == []


def test_rpc_unknown_environment_is_not_found(server: Server, uid: str) -> None:
    with server.rpc(environment=f"no-such-env-{uid}") as rpc:
        with pytest.raises(IronflowRPCError) as exc:
            rpc.functions.list(ListFunctionsRequest())
        assert exc.value.code == "not_found", exc.value
        with pytest.raises(IronflowRPCError) as exc:
            ifconf.emit_rpc(rpc, f"{uid}.env.rpc", {"a": 1})
        assert exc.value.code == "not_found", exc.value
    assert server.rest().events_list(name=f"{uid}.env.rpc")["events"] == []


def test_rpc_default_environment_explicit(server: Server, uid: str) -> None:
    with server.rpc(environment="default") as rpc:
        fid = f"fn-{uid}"
        ifconf.register(rpc, fid, [f"{uid}.env.ok"])
        out = ifconf.emit_rpc(rpc, f"{uid}.env.ok", {"a": 1})
        assert len(out.run_ids) == 1
    # Same data is visible without any environment header (default environment).
    with server.rpc() as rpc:
        assert rpc.functions.get(GetFunctionRequest(id=fid)).id == fid
