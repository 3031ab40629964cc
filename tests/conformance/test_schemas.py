"""Event schemas through ironflow-py's `rpc.event_schemas` client: registration (refusing what is not a
JSON Schema), reads, revisions of replaced and deleted definitions, enforcement on emit and on append
(`reject` refuses naming the failing path and stores nothing; `warn` stores and flags), upcasting, and
the enforcement report.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from ironflow.rpc import IronflowRPC, IronflowRPCError
from ironflow.rpc.v1 import (
    AppendEventRequest,
    CheckEnforcementRequest,
    DeleteSchemaRequest,
    GetSchemaRequest,
    GetSchemaRevisionRequest,
    ListSchemaHistoryRequest,
    ListSchemasRequest,
    ReadStreamRequest,
    RegisterSchemaRequest,
    TestUpcastRequest as UpcastRequest,
)

from ifconf import Server, emit_rpc, struct


def name() -> str:
    return f"order.placed.{uuid.uuid4().hex[:10]}"


def schema(mode: str | None = None, **extra: Any) -> str:
    doc: dict[str, Any] = {
        "type": "object",
        "required": ["total"],
        "properties": {"total": {"type": "number"}},
        **extra,
    }
    if mode:
        doc["x-ironflow-enforcement"] = mode
    return json.dumps(doc)


def register(rpc: IronflowRPC, event: str, version: int, doc: str, **fields: Any) -> str:
    return rpc.event_schemas.register(RegisterSchemaRequest(
        event_name=event, version=version, schema_json=doc, **fields)).status


def rpc_error(call: Any) -> IronflowRPCError:
    with pytest.raises(IronflowRPCError) as exc:
        call()
    return exc.value


def events_named(server: Server, event: str) -> list[dict[str, Any]]:
    r = server.request("GET", "/api/v1/events", params={"name": event})
    assert r.status == 200, r
    return r.json()["events"]


def test_register_read_list_and_revisions(rpc: IronflowRPC) -> None:
    event = name()
    assert register(rpc, event, 1, schema(), description="first") == "created"
    assert register(rpc, event, 2, schema(), description="second") == "created"
    latest = rpc.event_schemas.get(GetSchemaRequest(event_name=event))
    assert (latest.version, latest.description) == (2, "second")
    assert json.loads(latest.schema_json)["required"] == ["total"]
    assert rpc.event_schemas.get(GetSchemaRequest(event_name=event, version=1)).description == "first"
    listed = rpc.event_schemas.list(ListSchemasRequest(event_name=event))
    assert [(s.event_name, s.version) for s in listed.schemas] == [(event, 1), (event, 2)]
    assert listed.total_count == 2

    # Replacing version 1 archives the old definition; deleting version 2 archives it too.
    assert register(rpc, event, 1, schema(additionalProperties=False), description="tighter",
                    change_reason="no extra fields") == "updated"
    history = rpc.event_schemas.list_history(ListSchemaHistoryRequest(event_name=event, version=1))
    assert len(history.entries) == 1 and not history.has_more
    entry = history.entries[0]
    assert entry.change_type == "updated" and entry.change_reason == "no extra fields"
    assert entry.previous_definition.description == "first"
    assert "additionalProperties" not in json.loads(entry.previous_definition.schema_json)
    same = rpc.event_schemas.get_revision(
        GetSchemaRevisionRequest(event_name=event, version=1, revision=entry.revision))
    assert same.entry.revision == entry.revision

    rpc.event_schemas.delete(DeleteSchemaRequest(event_name=event, version=2, change_reason="retired"))
    assert rpc_error(lambda: rpc.event_schemas.get(GetSchemaRequest(event_name=event, version=2))).code == "not_found"
    assert rpc.event_schemas.get(GetSchemaRequest(event_name=event)).version == 1
    deleted = rpc.event_schemas.list_history(ListSchemaHistoryRequest(event_name=event, version=2))
    assert [e.change_type for e in deleted.entries] == ["deleted"]
    assert rpc_error(lambda: rpc.event_schemas.delete(
        DeleteSchemaRequest(event_name=event, version=2))).code == "not_found"


def test_what_is_not_a_json_schema_is_refused_and_nothing_stored(rpc: IronflowRPC) -> None:
    event = name()
    for doc, word in [("{not json", "not valid JSON"), ('{"type": "nonsense"}', "JSON Schema"),
                      ("[1, 2]", "JSON Schema"), ('{"x-ironflow-enforcement": "loud"}', "enforcement")]:
        err = rpc_error(lambda d=doc: register(rpc, event, 1, d))
        assert err.code == "invalid_argument" and word in str(err), (doc, str(err))
    assert rpc_error(lambda: register(rpc, "", 1, schema())).code == "invalid_argument"
    assert rpc_error(lambda: register(rpc, event, -3, schema())).code == "invalid_argument"
    assert rpc.event_schemas.list(ListSchemasRequest(event_name=event)).total_count == 0


def test_reject_refuses_emits_and_appends_naming_the_failing_path(server: Server, rpc: IronflowRPC) -> None:
    event = name()
    register(rpc, event, 1, schema("reject"))
    err = rpc_error(lambda: emit_rpc(rpc, event, {"total": "ten"}))
    assert err.code == "invalid_argument" and "/total" in str(err), str(err)
    err = rpc_error(lambda: emit_rpc(rpc, event, {"other": 1}))
    assert err.code == "invalid_argument" and "total" in str(err), str(err)
    entity = f"order-{uuid.uuid4().hex[:8]}"
    err = rpc_error(lambda: rpc.streams.append_event(AppendEventRequest(
        entity_id=entity, entity_type="order", event_name=event, data=struct({"total": "x"}),
        expected_version=-1)))
    assert err.code == "invalid_argument" and "/total" in str(err), str(err)
    assert events_named(server, event) == [], "a rejected event was stored"
    assert list(rpc.streams.read_stream(ReadStreamRequest(entity_id=entity)).events) == []

    ok = emit_rpc(rpc, event, {"total": 10})
    stored = events_named(server, event)
    assert [e["id"] for e in stored] == [ok.event_id]
    assert stored[0]["version"] == 1 and stored[0]["schema_hash"], stored[0]
    # An event naming a version with no schema is refused too.
    err = rpc_error(lambda: emit_rpc(rpc, event, {"total": 1}, version=7))
    assert err.code == "invalid_argument" and "version 7" in str(err), str(err)


def test_warn_stores_and_flags(server: Server, rpc: IronflowRPC) -> None:
    event = name()
    register(rpc, event, 1, schema("warn"))
    bad = emit_rpc(rpc, event, {"total": "ten"})
    good = emit_rpc(rpc, event, {"total": 3})
    by_id = {e["id"]: e for e in events_named(server, event)}
    assert "/total" in by_id[bad.event_id]["schema_error"], by_id[bad.event_id]
    assert "schema_error" not in by_id[good.event_id]


def test_an_unregistered_or_off_name_is_not_checked(server: Server, rpc: IronflowRPC) -> None:
    event = name()
    emit_rpc(rpc, event, {"total": "anything"})
    register(rpc, event, 1, schema("off"))
    emit_rpc(rpc, event, {"total": "still anything"})
    assert len(events_named(server, event)) == 2


def test_upcasting_follows_the_registered_versions(rpc: IronflowRPC) -> None:
    event = name()
    register(rpc, event, 1, json.dumps({"type": "object"}))
    register(rpc, event, 2, json.dumps({"type": "object", "x-ironflow-upcast": {
        "rename": {"amount": "total"}, "description": "amount is now total"}}))
    register(rpc, event, 3, json.dumps({"type": "object", "properties": {"currency": {"default": "EUR"}}}))
    out = rpc.event_schemas.test_upcast(UpcastRequest(
        event_name=event, from_version=1, to_version=3, data=struct({"amount": 5})))
    assert out.data.to_python() == {"total": 5, "currency": "EUR"}
    assert [(s.from_version, s.to_version) for s in out.steps_applied] == [(1, 2), (2, 3)]
    assert out.steps_applied[0].description == "amount is now total"
    latest = rpc.event_schemas.test_upcast(UpcastRequest(
        event_name=event, from_version=2, to_version=0, data=struct({"total": 1})))
    assert latest.data.to_python() == {"total": 1, "currency": "EUR"}
    err = rpc_error(lambda: rpc.event_schemas.test_upcast(UpcastRequest(
        event_name=event, from_version=3, to_version=1, data=struct({}))))
    assert err.code == "invalid_argument", err


def test_check_enforcement_reports_mode_schemas_and_traffic(rpc: IronflowRPC) -> None:
    event = name()
    register(rpc, event, 1, schema("reject"))
    register(rpc, event, 2, json.dumps({"description": "a sample payload, not a schema"}))
    emit_rpc(rpc, event, {"total": 1}, version=1)
    emit_rpc(rpc, event, {"total": 2}, version=1)
    report = rpc.event_schemas.check_enforcement(CheckEnforcementRequest(event_name=event))
    assert report.mode == "off", "the latest version sets no mode, so the server's default (off) applies"
    assert report.traffic_window_hours == 24 and report.total_schemas == 2
    by_version = {s.version: s for s in report.schemas}
    assert by_version[1].asserts is True and by_version[2].asserts is False
    assert by_version[1].compile_error == ""
    traffic = [(t.version, t.count) for t in by_version[1].traffic]
    assert traffic == [(1, 2)], traffic
    assert by_version[1].traffic[0].schema_hash == "", "events accepted while enforcement is off carry no hash"
