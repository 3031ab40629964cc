"""Event sourcing through ironflow-py's `rpc.streams` client: appends with expected versions (also 20
writers racing for one stream), reads both ways, stream listings, an entity's history with the runs its
events started, snapshots, tombstones with and without purge, redaction of an entity event, the REST
views of entity events, and the documented SQL views.
"""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import uuid
from typing import Any

import pytest
from ironflow.rpc import IronflowRPC, IronflowRPCError
from ironflow.rpc.v1 import (
    AppendEventRequest,
    CreateSnapshotRequest,
    DeleteStreamRequest,
    GetEntityHistoryRequest,
    GetSnapshotRequest,
    GetStreamInfoRequest,
    ListRunsRequest,
    ListStreamsRequest,
    ReadStreamRequest,
    RedactEventRequest,
)

from ifconf import Server, register, struct
from workerkit import WorkerKit


def eid(prefix: str = "order") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def append(rpc: IronflowRPC, entity: str, name: str, data: dict[str, Any], expected: int = -1,
           entity_type: str = "order", **fields: Any) -> Any:
    return rpc.streams.append_event(AppendEventRequest(
        entity_id=entity, entity_type=entity_type, event_name=name, data=struct(data),
        expected_version=expected, **fields))


def rpc_error(call: Any) -> IronflowRPCError:
    with pytest.raises(IronflowRPCError) as exc:
        call()
    return exc.value


def read(rpc: IronflowRPC, entity: str, **fields: Any) -> list[Any]:
    return list(rpc.streams.read_stream(ReadStreamRequest(entity_id=entity, **fields)).events)


def sql_rows(server: Server, query: str) -> list[tuple[str, ...]]:
    """Rows of a query against the server's own database, as text."""
    if server.backend == "sqlite":
        path = server.workdir / ".ironflow" / "ironflow.db"
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return [tuple("" if v is None else str(v) for v in row) for row in con.execute(query)]
        finally:
            con.close()
    assert server.db_url
    r = subprocess.run(["psql", server.db_url, "-X", "-At", "-F", "\t", "-c", query],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    return [tuple(line.split("\t")) for line in r.stdout.splitlines() if line]


def test_append_checks_the_expected_version_and_reads_back_both_ways(rpc: IronflowRPC) -> None:
    order = eid()
    first = append(rpc, order, "order.created", {"total": 10}, expected=0)
    assert first.entity_version == 1 and first.event_id and first.sequence > 0
    second = append(rpc, order, "order.paid", {"paid": 10}, expected=1)
    assert second.entity_version == 2 and second.sequence > first.sequence
    third = append(rpc, order, "order.shipped", {"carrier": "ups"}, expected=-1)
    assert third.entity_version == 3

    # A stale expected version is refused, names the actual version, and writes nothing.
    err = rpc_error(lambda: append(rpc, order, "order.cancelled", {}, expected=1))
    assert err.code == "aborted", err
    assert "version 3" in str(err) and "expected version 1" in str(err), str(err)
    err = rpc_error(lambda: append(rpc, order, "order.created", {}, expected=0))
    assert err.code == "aborted" and "version 3" in str(err), str(err)

    forward = read(rpc, order)
    assert [e.entity_version for e in forward] == [1, 2, 3]
    assert [e.name for e in forward] == ["order.created", "order.paid", "order.shipped"]
    assert forward[0].entity_id == order and forward[0].entity_type == "order"
    assert forward[0].id == first.event_id
    assert forward[0].data.to_python() == {"total": 10}
    assert [e.entity_version for e in read(rpc, order, from_version=2)] == [2, 3]
    assert [e.entity_version for e in read(rpc, order, direction="backward")] == [3, 2, 1]
    assert [e.entity_version for e in read(rpc, order, direction="backward", from_version=2, limit=1)] == [2]
    assert rpc.streams.read_stream(ReadStreamRequest(entity_id=order)).total_count == 3
    assert read(rpc, eid("never-written")) == [], "a stream never written reads as empty"

    info = rpc.streams.get_info(GetStreamInfoRequest(entity_id=order))
    assert (info.entity_id, info.entity_type, info.version, info.event_count, info.deleted) == \
        (order, "order", 3, 3, False)

    # Another type on the same stream is refused.
    err = rpc_error(lambda: append(rpc, order, "cart.opened", {}, entity_type="cart"))
    assert err.code == "failed_precondition" and "'order'" in str(err), str(err)
    assert rpc.streams.get_info(GetStreamInfoRequest(entity_id=order)).version == 3


def test_a_repeated_idempotency_key_returns_the_first_append(rpc: IronflowRPC) -> None:
    order = eid()
    key = f"k-{uuid.uuid4().hex}"
    first = append(rpc, order, "order.created", {"n": 1}, expected=0, idempotency_key=key)
    again = append(rpc, order, "order.created", {"n": 1}, expected=0, idempotency_key=key)
    assert (again.event_id, again.entity_version, again.sequence) == \
        (first.event_id, first.entity_version, first.sequence)
    assert len(read(rpc, order)) == 1


def test_twenty_writers_take_every_version_exactly_once(server: Server, rpc: IronflowRPC) -> None:
    # Round one: 20 writers create the same stream at once: one wins, 19 are told it exists.
    order = eid()
    barrier = threading.Barrier(20)
    results: list[Any] = [None] * 20

    def create(i: int) -> None:
        client = server.rpc()
        try:
            barrier.wait()
            try:
                results[i] = append(client, order, "order.created", {"writer": i}, expected=0)
            except IronflowRPCError as err:
                results[i] = err
        finally:
            client.close()

    threads = [threading.Thread(target=create, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results if not isinstance(r, IronflowRPCError)]
    lost = [r for r in results if isinstance(r, IronflowRPCError)]
    assert len(won) == 1 and won[0].entity_version == 1
    assert len(lost) == 19 and all(e.code == "aborted" and "version 1" in str(e) for e in lost), lost

    # Round two: 20 writers each append 5 events, reading the head and retrying on conflict.
    per_writer = 5
    conflicts = [0] * 20
    barrier = threading.Barrier(20)

    def writer(i: int) -> None:
        client = server.rpc()
        try:
            barrier.wait()
            done = 0
            while done < per_writer:
                head = client.streams.get_info(GetStreamInfoRequest(entity_id=order)).version
                try:
                    out = append(client, order, "order.line_added", {"writer": i, "n": done}, expected=head)
                    assert out.entity_version == head + 1
                    done += 1
                except IronflowRPCError as err:
                    assert err.code == "aborted", err
                    conflicts[i] += 1
        finally:
            client.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = read(rpc, order, limit=1000)
    assert [e.entity_version for e in events] == list(range(1, 2 + 20 * per_writer)), "a version is missing or taken twice"
    writes = sorted((e.data.to_python()["writer"], e.data.to_python()["n"]) for e in events[1:])
    assert writes == sorted((i, n) for i in range(20) for n in range(per_writer)), "an acknowledged append is lost"
    info = rpc.streams.get_info(GetStreamInfoRequest(entity_id=order))
    assert (info.version, info.event_count) == (1 + 20 * per_writer, 1 + 20 * per_writer)


def test_an_appended_event_triggers_functions_and_shows_in_the_entity_history(
        server: Server, rpc: IronflowRPC) -> None:
    tag = uuid.uuid4().hex[:8]
    fid = f"on-order-{tag}"
    register(rpc, fid, [f"order.placed.{tag}"])
    order = eid()
    out = append(rpc, order, f"order.placed.{tag}", {"total": 5}, expected=0)
    runs = list(rpc.runs.list(ListRunsRequest(function_id=fid)).runs)
    assert len(runs) == 1 and runs[0].event_id == out.event_id, "the append started the function's run"
    run_id = runs[0].id

    history = rpc.streams.get_history(GetEntityHistoryRequest(entity_id=order))
    assert history.info.current_version == 1 and history.total_events == 1
    assert [e.event_id for e in history.entries] == [out.event_id]
    assert [r.run_id for r in history.entries[0].runs] == [run_id]
    assert history.entries[0].runs[0].function_id == fid
    assert history.next_cursor == 0

    # The entity event is an ordinary event too.
    r = server.request("GET", f"/api/v1/events/{out.event_id}")
    assert r.status == 200, r
    assert (r.json()["entity_id"], r.json()["entity_type"], r.json()["entity_version"]) == (order, "order", 1)
    listed = server.request("GET", "/api/v1/events", params={"name": f"order.placed.{tag}"}).json()
    assert [e.get("entity_id") for e in listed["events"]] == [order]
    r = server.request("GET", f"/api/v1/runs/{run_id}/streams")
    assert r.status == 200 and r.json() == {"entity_ids": [order]}, r
    assert server.request("GET", f"/api/v1/runs/{uuid.uuid4()}/streams").status == 404

    # A step's append (the SDK sends X-Ironflow-Run-ID) counts as the run touching that stream.
    other = eid("invoice")
    r = server.request("POST", "/ironflow.v1.EntityStreamService/AppendEvent", json_body={
        "entityId": other, "entityType": "invoice", "eventName": "invoice.issued", "data": {"n": 1},
        "expectedVersion": "-1"}, headers={"X-Ironflow-Run-ID": run_id})
    assert r.status == 200, r
    r = server.request("GET", f"/api/v1/runs/{run_id}/streams")
    assert sorted(r.json()["entity_ids"]) == sorted([order, other]), r


def test_entity_history_pages_by_version(rpc: IronflowRPC) -> None:
    order = eid()
    for i in range(5):
        append(rpc, order, "order.step", {"i": i})
    page = rpc.streams.get_history(GetEntityHistoryRequest(entity_id=order, limit=2))
    assert [e.entity_version for e in page.entries] == [1, 2] and page.next_cursor == 3
    page = rpc.streams.get_history(GetEntityHistoryRequest(entity_id=order, limit=2, from_version=page.next_cursor))
    assert [e.entity_version for e in page.entries] == [3, 4] and page.next_cursor == 5
    page = rpc.streams.get_history(GetEntityHistoryRequest(entity_id=order, limit=2, from_version=5))
    assert [e.entity_version for e in page.entries] == [5] and page.next_cursor == 0
    back = rpc.streams.get_history(GetEntityHistoryRequest(entity_id=order, limit=3, direction="backward"))
    assert [e.entity_version for e in back.entries] == [5, 4, 3] and back.next_cursor == 2
    assert rpc_error(lambda: rpc.streams.get_history(
        GetEntityHistoryRequest(entity_id=eid("missing")))).code == "not_found"


def test_list_streams_filters_by_type_and_id(rpc: IronflowRPC) -> None:
    tag = uuid.uuid4().hex[:8]
    carts = [f"cart-{tag}-{i}" for i in range(3)]
    for c in carts:
        append(rpc, c, "cart.opened", {}, entity_type=f"cart{tag}")
    append(rpc, f"user-{tag}", "user.joined", {}, entity_type=f"user{tag}")
    listed = rpc.streams.list_streams(ListStreamsRequest(entity_type=f"cart{tag}"))
    assert [s.entity_id for s in listed.streams] == carts and listed.total_count == 3
    page = rpc.streams.list_streams(ListStreamsRequest(entity_type=f"cart{tag}", limit=2, offset=2))
    assert [s.entity_id for s in page.streams] == carts[2:] and page.total_count == 3
    found = rpc.streams.list_streams(ListStreamsRequest(search=f"{tag}-1"))
    assert [s.entity_id for s in found.streams] == [carts[1]]


def test_snapshots_are_kept_per_version(rpc: IronflowRPC) -> None:
    order = eid()
    for i in range(3):
        append(rpc, order, "order.step", {"i": i})
    s2 = rpc.streams.create_snapshot(CreateSnapshotRequest(
        entity_id=order, entity_type="order", entity_version=2, state=struct({"sum": 1})))
    s3 = rpc.streams.create_snapshot(CreateSnapshotRequest(
        entity_id=order, entity_type="order", entity_version=3, state=struct({"sum": 3})))
    latest = rpc.streams.get_snapshot(GetSnapshotRequest(entity_id=order))
    assert (latest.snapshot_id, latest.entity_version, latest.state.to_python()) == (s3.snapshot_id, 3, {"sum": 3})
    older = rpc.streams.get_snapshot(GetSnapshotRequest(entity_id=order, before_version=2))
    assert (older.snapshot_id, older.entity_version, older.entity_type) == (s2.snapshot_id, 2, "order")
    err = rpc_error(lambda: rpc.streams.create_snapshot(CreateSnapshotRequest(
        entity_id=order, entity_type="order", entity_version=9, state=struct({}))))
    assert err.code == "failed_precondition" and "1 to 3" in str(err), str(err)
    assert rpc_error(lambda: rpc.streams.get_snapshot(
        GetSnapshotRequest(entity_id=order, before_version=1))).code == "not_found"


def test_delete_stream_appends_a_tombstone_and_purge_removes_the_events(rpc: IronflowRPC) -> None:
    kept, purged = eid(), eid()
    for entity in (kept, purged):
        for i in range(2):
            append(rpc, entity, "order.step", {"i": i})
        rpc.streams.create_snapshot(CreateSnapshotRequest(
            entity_id=entity, entity_type="order", entity_version=2, state=struct({"i": 1})))

    assert rpc.streams.delete(DeleteStreamRequest(entity_id=kept)).entity_version == 3
    events = read(rpc, kept)
    assert [(e.entity_version, e.name) for e in events] == [(1, "order.step"), (2, "order.step"), (3, "$stream.deleted")]
    assert rpc.streams.get_info(GetStreamInfoRequest(entity_id=kept)).deleted is True
    assert rpc_error(lambda: rpc.streams.get_snapshot(GetSnapshotRequest(entity_id=kept))).code == "not_found"
    err = rpc_error(lambda: append(rpc, kept, "order.step", {}))
    assert err.code == "failed_precondition" and "deleted" in str(err), str(err)
    assert rpc_error(lambda: rpc.streams.delete(DeleteStreamRequest(entity_id=kept))).code == "failed_precondition"

    assert rpc.streams.delete(DeleteStreamRequest(entity_id=purged, purge=True)).entity_version == 3
    assert [(e.entity_version, e.name) for e in read(rpc, purged)] == [(3, "$stream.deleted")]

    hidden = [s.entity_id for s in rpc.streams.list_streams(ListStreamsRequest(search=kept)).streams]
    shown = [s.entity_id for s in rpc.streams.list_streams(
        ListStreamsRequest(search=kept, include_deleted=True)).streams]
    assert hidden == [] and shown == [kept]
    assert rpc_error(lambda: rpc.streams.delete(DeleteStreamRequest(entity_id=eid("nothing")))).code == "not_found"


def test_bad_appends_are_refused_and_write_nothing(server: Server, rpc: IronflowRPC) -> None:
    order = eid()
    append(rpc, order, "order.created", {})
    cases = [
        (dict(entity_id=""), "entity_id"),
        (dict(entity_type=""), "entity_type"),
        (dict(expected_version=-2), "expected_version"),
        (dict(event_name=""), "event_name"),
        (dict(event_name="$stream.deleted"), "reserved"),
        (dict(version=-1), "version"),
    ]
    for fields, word in cases:
        request = dict(entity_id=order, entity_type="order", event_name="order.x", data=struct({}),
                       expected_version=-1)
        request.update(fields)
        err = rpc_error(lambda r=request: rpc.streams.append_event(AppendEventRequest(**r)))
        assert err.code == "invalid_argument" and word in str(err), (fields, str(err))
    blob = "x" * (1024 * 1024 + 10)
    err = rpc_error(lambda: append(rpc, order, "order.big", {"blob": blob}))
    assert err.code in ("resource_exhausted", "invalid_argument"), err
    assert len(read(rpc, order)) == 1, "a refused append was stored"
    r = server.request("POST", "/ironflow.v1.EntityStreamService/NoSuchMethod", json_body={})
    assert r.status == 404 and r.json()["code"] == "unimplemented"


def test_redacting_an_entity_event_keeps_its_place_and_drops_snapshots_built_on_it(rpc: IronflowRPC) -> None:
    order = eid()
    outs = [append(rpc, order, "order.step", {"secret": f"s{i}"}) for i in range(3)]
    for v in (1, 2, 3):
        rpc.streams.create_snapshot(CreateSnapshotRequest(
            entity_id=order, entity_type="order", entity_version=v, state=struct({"v": v})))
    rpc.events.redact(RedactEventRequest(event_id=outs[1].event_id))
    events = read(rpc, order)
    assert [(e.entity_version, e.name) for e in events] == [(1, "order.step"), (2, "order.step"), (3, "order.step")]
    assert events[1].id == outs[1].event_id and events[1].data.to_python().get("$redacted") is True
    assert events[0].data.to_python() == {"secret": "s0"}
    assert rpc.streams.get_snapshot(GetSnapshotRequest(entity_id=order)).entity_version == 1, \
        "snapshots at and after the redacted version are dropped, the earlier one kept"


def test_the_sql_views_show_streams_and_their_events(server: Server, rpc: IronflowRPC) -> None:
    order = eid()
    for i in range(3):
        append(rpc, order, f"order.v{i}", {"i": i})
    rows = sql_rows(server, f"SELECT entity_type, version, event_count, deleted FROM ironflow_streams "
                            f"WHERE entity_id = '{order}'")
    assert len(rows) == 1 and rows[0][:3] == ("order", "3", "3") and rows[0][3] in ("f", "0", "False")
    last_two = sql_rows(server, f"SELECT entity_version, name FROM ironflow_stream_events "
                                f"WHERE entity_id = '{order}' ORDER BY entity_version DESC LIMIT 2")
    assert last_two == [("3", "order.v2"), ("2", "order.v1")]


def test_a_worker_runs_the_function_an_append_triggered_and_an_append_satisfies_a_wait(wk: WorkerKit) -> None:
    wk.worker("three", "wait")
    rpc = wk.server.rpc()
    try:
        order = eid()
        out = append(rpc, order, wk.event("three"), {"n": 1}, expected=0)
        runs = wk.runs_of("three")
        assert len(runs) == 1 and runs[0]["event_id"] == out.event_id
        done = wk.wait_status(runs[0]["id"], "completed")
        assert done["output"] == {"a": 2, "b": 20, "c": 27}, done
        entry = rpc.streams.get_history(GetEntityHistoryRequest(entity_id=order)).entries[0]
        assert [r.status for r in entry.runs] == ["completed"]
        assert [s.name for s in entry.runs[0].steps] == ["s1", "s2", "s3"]
        assert all(s.status == "completed" for s in entry.runs[0].steps)

        # A run waiting for an event is resumed by an entity event of that name.
        rid = wk.start_run("wait", {"id": order})
        wk.wait_step(rid, "reply", "waiting")
        append(rpc, order, wk.event("reply"), {"id": order, "ok": True})
        finished = wk.wait_status(rid, "completed")
        assert finished["output"]["reply"] == {"id": order, "ok": True}, finished
    finally:
        rpc.close()
