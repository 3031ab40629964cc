"""The flow map (`GET /api/v1/flow/*`) through ironflow-py's REST client: who invokes whom, who waits
for which event, who publishes to which topic, which events entity streams hold, which events a run
wrote, and which events each webhook source delivered — all derived from what runs did."""

from __future__ import annotations

import json

from ironflow.rpc import v1

from workerkit import WorkerKit


def test_the_flow_map_follows_what_runs_did(wk: WorkerKit) -> None:
    wk.worker("invoke", "wait", "flowmap")
    rest = wk.server.rest()
    parent = wk.start_run("parent", {"x": 2})
    wk.wait_status(parent, "completed")
    waiting = wk.start_run("wait", {"timeout": "60s"})
    wk.wait_status(waiting, "waiting")
    published = wk.start_run("flowmap")
    wk.wait_status(published, "completed")

    invokes = rest.flow_list_invoke_edges()["edges"]
    assert {"parent_function_id": wk.fid("parent"), "child_function_id": wk.fid("child")} in invokes, invokes
    waits = rest.flow_list_wait_edges()["edges"]
    assert {"function_id": wk.fid("wait"), "event_name": wk.event("reply")} in waits, waits
    topics = rest.flow_list_topic_edges()["edges"]
    assert {"function_id": wk.fid("flowmap"), "topic": f"{wk.prefix}.orders"} in topics, topics
    assert not any(e["function_id"] == wk.fid("parent") for e in topics), "only publishing functions"

    # An append a run's step makes (X-Ironflow-Run-ID) is an emit edge and a stream edge.
    rpc = wk.server.rpc()
    try:
        r = wk.server.request(
            "POST", "/ironflow.v1.EntityStreamService/AppendEvent",
            json_body={"entityId": f"{wk.prefix}-o1", "entityType": f"{wk.prefix}-order",
                       "eventName": f"{wk.prefix}.order.placed", "data": {"total": 5}},
            headers={"X-Ironflow-Run-ID": parent})
        assert r.status == 200, r
        rpc.streams.append_event(v1.AppendEventRequest(
            entity_id=f"{wk.prefix}-o1", entity_type=f"{wk.prefix}-order", event_name=f"{wk.prefix}.order.paid",
            expected_version=1))
    finally:
        rpc.close()
    streams = rest.flow_list_stream_edges()["edges"]
    for name in ("order.placed", "order.paid"):
        assert {"entity_type": f"{wk.prefix}-order", "event": f"{wk.prefix}.{name}"} in streams, streams
    sent = wk.server.request("POST", "/api/v1/events", json_body={"name": f"{wk.prefix}.shipped", "data": {}},
                             headers={"X-Ironflow-Run-ID": published})
    assert sent.status == 200, sent
    emits = rest.flow_list_emit_edges()["edges"]
    assert {"event": f"{wk.prefix}.order.placed", "function_id": wk.fid("parent")} in emits, emits
    assert {"event": f"{wk.prefix}.shipped", "function_id": wk.fid("flowmap")} in emits, emits
    assert not any(e["event"] == f"{wk.prefix}.order.paid" for e in emits), "no run wrote the second one"

    # A webhook source (no signature check) and one delivery.
    src = wk.server.request("POST", "/ironflow.v1.WebhookService/CreateWebhookSource",
                            json_body={"name": f"{wk.prefix} hooks", "eventPrefix": f"{wk.prefix}.hook"})
    assert src.status == 200, src
    source = src.json()
    token = source.get("ingestToken") or source.get("source", {}).get("ingestToken")
    source_id = source.get("id") or source.get("source", {}).get("id")
    delivered = wk.server.request("POST", f"/webhooks/{token}", raw=json.dumps({"a": 1}).encode(), auth=False)
    assert delivered.status == 200, delivered
    hooks = rest.flow_list_webhooks()
    mine = next(s for s in hooks["sources"] if s["id"] == source_id)
    assert mine["delivery_counts"] == {"accepted": 1, "failed": 0, "rejected": 0}, mine
    assert mine["event_prefix"] == f"{wk.prefix}.hook" and mine["latest_delivery_status"] == "accepted", mine
    event = next(e["event"] for e in hooks["edges"] if e["source_id"] == source_id)
    assert event.startswith(f"{wk.prefix}.hook"), hooks["edges"]
