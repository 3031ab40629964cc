"""Probes, capabilities, and the Health / Info RPCs."""

from __future__ import annotations

from ironflow.rpc.v1 import HealthRequest, InfoRequest

from ifconf import SERVICE, Server


def test_health_needs_no_key(server: Server) -> None:
    r = server.request("GET", "/health", auth=False)
    assert r.status == 200, r
    body = r.json()
    assert body.get("status") == "ok", body


def test_ready_needs_no_key(server: Server) -> None:
    r = server.request("GET", "/ready", auth=False)
    assert r.status == 200, r
    assert r.json().get("status") == "ready", r


def test_metrics_needs_no_key(server: Server) -> None:
    r = server.request("GET", "/metrics", auth=False)
    assert r.status == 200, r
    # Prometheus text exposition; the brief only fixes that it is served without a key.
    assert r.content_type.startswith("text/plain"), r


def test_sdk_health_ready_and_capabilities(server: Server) -> None:
    client = server.rest()
    assert client.health()["status"] == "ok"
    assert client.ready()["status"] == "ready"
    caps = client.capabilities()
    assert isinstance(caps.get("transports"), list), caps
    assert all(isinstance(t, str) for t in caps["transports"]), caps
    assert isinstance(caps.get("features"), list), caps
    assert all(isinstance(f, str) for f in caps["features"]), caps
    assert isinstance(caps.get("version"), str) and caps["version"], caps
    # The server was started with a bootstrap key and rejects key-less calls (see test_auth).
    assert caps.get("auth_required") is True, caps


def test_rpc_health_and_info_binary(server: Server) -> None:
    # Health/Info are not exposed on IronflowRPC's public namespaces; the SDK's own generated service client
    # (same transport, interceptors: binary proto + gzip + bearer key) is used to call them.
    with server.rpc() as rpc:
        service = rpc._ironflow_service  # noqa: SLF001
        health = service.health(HealthRequest())
        assert health.status, f"HealthResponse.status is empty: {health!r}"
        info = service.info(InfoRequest())
        assert info.version, f"InfoResponse.version is empty: {info!r}"
        assert info.function_count >= 0 and info.active_runs >= 0


def test_rpc_health_and_info_connect_json(server: Server) -> None:
    r = server.connect_json("Health", {})
    assert r.status == 200, r
    assert r.content_type.startswith("application/json"), r
    assert r.json().get("status"), r
    r = server.request(
        "POST", f"{SERVICE}/Info", json_body={}, headers={"Connect-Protocol-Version": "1"}
    )
    assert r.status == 200, r
    assert r.json().get("version"), r
