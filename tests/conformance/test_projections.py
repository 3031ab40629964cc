"""Projections driven by ironflow-py 0.53.0's own runner (`Worker(projections=[...])`, real processes):
managed state per partition, external side effects, lease takeover after SIGKILL, catch-up waits,
operations, and a cursor that never skips an event an open transaction still holds (Postgres)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ironflow.rpc import IronflowRPC, IronflowRPCError
from ironflow.rpc.v1 import (
    AppendEventRequest,
    CreateSQLProjectionRequest,
    ExecuteSQLRequest,
    GetProjectionRequest,
    GetRebuildJobRequest,
    GetProjectionStatusRequest,
    ListProjectionHistoryRequest,
    ListProjectionsRequest,
    PauseProjectionRequest,
    QuerySQLProjectionRequest,
    RebuildProjectionRequest,
    RegisterProjectionRequest,
    ResumeProjectionRequest,
    WaitForEventRequest,
    WaitItem,
    WaitProjectionCatchupBatchRequest,
    WaitProjectionCatchupRequest,
)
from protobuf.wkt import Duration, Struct

from conftest import _serve
from ifconf import Server

APP = Path(__file__).resolve().parent / "projection_app.py"
LEASE_TTL_S = 3
DEADLINE_S = 60.0


@pytest.fixture(scope="session")
def projection_server(backend: str) -> Iterator[Server]:
    """A server per backend with a short projection lease, so a takeover after SIGKILL is quick."""
    yield from _serve(backend, ("--projection-lease-ttl-secs", str(LEASE_TTL_S)))


class Runner:
    """One projection_app.py process: a real ironflow-py Worker running projection runners."""

    def __init__(self, kit: Kit, scenarios: list[str], delay_ms: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IRONFLOW_")}
        env["IRONFLOW_NO_DISCOVERY"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        self.log = kit.dir / f"runner-{uuid.uuid4().hex[:6]}.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(APP), "--server", kit.server.url, "--key", kit.server.api_key,
                 "--prefix", kit.prefix, "--effects", str(kit.effects), "--delay-ms", str(delay_ms), *scenarios],
                cwd=kit.dir, stdout=log, stderr=subprocess.STDOUT, env=env,
            )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


class Kit:
    def __init__(self, server: Server, tmp: Path) -> None:
        self.server = server
        self.dir = tmp
        self.prefix = f"p{uuid.uuid4().hex[:8]}"
        self.effects = tmp / "effects.jsonl"
        self.runners: list[Runner] = []

    def runner(self, *scenarios: str, delay_ms: int = 0) -> Runner:
        r = Runner(self, list(scenarios), delay_ms)
        self.runners.append(r)
        return r

    def close(self) -> None:
        for r in self.runners:
            r.kill()

    def name(self, scenario: str) -> str:
        return f"{self.prefix}-{scenario}"

    def until(self, predicate: Callable[[], Any], what: str, deadline_s: float = DEADLINE_S) -> Any:
        end = time.monotonic() + deadline_s
        while True:
            got = predicate()
            if got:
                return got
            if time.monotonic() > end:
                logs = "\n".join(r.logs() for r in self.runners)
                raise AssertionError(f"timed out waiting for {what}\n{logs}\n{self.server.logs()[-3000:]}")
            time.sleep(0.05)

    def status(self, scenario: str) -> dict[str, Any]:
        r = self.server.request("GET", f"/api/v1/projections/{self.name(scenario)}/status")
        return r.json() if r.status == 200 else {}

    def emit(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        """REST emit of `{prefix}.{name}`: {id, seq}."""
        r = self.server.request("POST", "/api/v1/events", json_body={"name": f"{self.prefix}.{name}", "data": data})
        assert r.status in (200, 201, 202), r
        body = r.json()
        return {"id": body["event_id"], "seq": int(body["seq"])}

    def effect_lines(self) -> list[dict[str, Any]]:
        if not self.effects.exists():
            return []
        return [json.loads(line) for line in self.effects.read_text().splitlines() if line.strip()]


@pytest.fixture
def kit(projection_server: Server, tmp_path: Path) -> Iterator[Kit]:
    k = Kit(projection_server, tmp_path)
    try:
        yield k
    finally:
        k.close()


@pytest.fixture(scope="module")
def pg_projection_server(postgres_admin: str) -> Iterator[Server]:
    """Postgres only: the test below is about Postgres taking sequence values before commit."""
    yield from _serve("postgres", ("--projection-lease-ttl-secs", str(LEASE_TTL_S)))


@pytest.fixture
def pg_kit(pg_projection_server: Server, tmp_path: Path) -> Iterator[Kit]:
    k = Kit(pg_projection_server, tmp_path)
    try:
        yield k
    finally:
        k.close()


def state_of(rpc: IronflowRPC, name: str, partition: str = "") -> Any:
    resp = rpc.projections.get(GetProjectionRequest(name=name, partition=partition))
    if resp.state_value is not None:
        return resp.state_value.to_python()
    return resp.state.to_python() if resp.state is not None else {}


def append_orders(rpc: IronflowRPC, kit: Kit, streams: int, per_stream: int) -> list[str]:
    ids = []
    for i in range(per_stream):
        for s in range(streams):
            resp = rpc.streams.append_event(AppendEventRequest(
                entity_id=f"{kit.prefix}-customer-{s}", entity_type="customer", event_name=f"{kit.prefix}.order",
                data=Struct.from_python({"n": i}), expected_version=-1,
            ))
            ids.append(resp.event_id)
    return ids


def test_a_managed_projection_counts_per_partition_and_survives_a_sigkill_takeover(kit: Kit) -> None:
    """1 000 events from five streams folded by the SDK runner, per stream. The first runner is SIGKILLed
    mid-way; the standby takes the lease over and finishes. No event is in any state twice."""
    name = kit.name("counters")
    with kit.server.rpc() as rpc:
        first = kit.runner("counters", delay_ms=4)
        kit.until(lambda: kit.status("counters").get("lease_epoch", 0) >= 1, "the first runner's lease")
        ids = append_orders(rpc, kit, streams=5, per_stream=200)
        kit.until(lambda: kit.status("counters").get("cursor_seq", 0) > 0, "the first runner saving progress")
        second = kit.runner("counters")
        first.kill()
        # 1 000 events at 4 ms each: the kill lands mid-way, with events left for the standby.
        assert kit.status("counters")["lag_events"] > 0
        kit.until(lambda: kit.status("counters").get("lease_epoch", 0) >= 2, "the standby taking the lease over",
                  deadline_s=LEASE_TTL_S + 20)
        kit.until(lambda: kit.status("counters").get("lag_events") == 0, "the projection catching up")
        seen: list[str] = []
        for s in range(5):
            state = state_of(rpc, name, f"{kit.prefix}-customer-{s}")
            assert state["count"] == 200, state["count"]
            assert len(state["ids"]) == 200 and len(set(state["ids"])) == 200
            assert state["partition"] == f"{kit.prefix}-customer-{s}"
            seen.extend(state["ids"])
        assert sorted(seen) == sorted(ids)
        # The partitions the REST route lists are the five streams.
        parts = kit.server.request("GET", f"/api/v1/projections/{name}/partitions").json()
        assert sorted(parts["partitions"]) == sorted(f"{kit.prefix}-customer-{s}" for s in range(5))
        assert second.proc.poll() is None


def test_an_external_projection_gets_every_event_and_keeps_only_the_cursor(kit: Kit) -> None:
    name = kit.name("external")
    kit.runner("external")
    kit.until(lambda: kit.status("external").get("lease_epoch", 0) >= 1, "the runner's lease")
    emitted = [kit.emit("order", {"i": i})["id"] for i in range(30)]
    kit.until(lambda: kit.status("external").get("lag_events") == 0 and len(kit.effect_lines()) >= 30,
              "the external handler seeing every event")
    lines = kit.effect_lines()
    assert [line["id"] for line in lines] == emitted  # in order, once each
    with kit.server.rpc() as rpc:
        got = rpc.projections.get(GetProjectionRequest(name=name))
        assert got.mode == "external" and got.registry is not None
        assert got.registry.last_event_seq == lines[-1]["seq"]


def test_wait_catchup_returns_when_the_projection_has_applied_the_event(kit: Kit) -> None:
    name = kit.name("ledger")
    with kit.server.rpc() as rpc:
        # Unknown projection: not found. min_seq 0: at once.
        with pytest.raises(IronflowRPCError) as missing:
            rpc.projections.wait_catchup(WaitProjectionCatchupRequest(name=f"{name}-nope", min_seq=1))
        assert missing.value.code == "not_found"
        kit.runner("ledger")
        kit.until(lambda: kit.status("ledger").get("lease_epoch", 0) >= 1, "the runner's lease")
        assert rpc.projections.wait_catchup(WaitProjectionCatchupRequest(name=name, min_seq=0)).caught_up
        for i in range(5):
            ev = kit.emit("entry", {"i": i})
            resp = rpc.projections.wait_catchup(WaitProjectionCatchupRequest(
                name=name, min_seq=ev["seq"], timeout=Duration(seconds=20)))
            assert resp.caught_up and not resp.timed_out, resp
            assert resp.current_seq >= ev["seq"] and resp.mode == "managed"
            # Read-your-writes: the state already has it.
            assert state_of(rpc, name)["ids"][-1] == ev["id"]
        ev = kit.emit("entry", {"i": 99})
        waited = rpc.projections.wait_for_event(WaitForEventRequest(
            event_id=ev["id"], projection=name, timeout=Duration(seconds=20)))
        assert waited.caught_up and waited.target_seq == ev["seq"]
        batch = rpc.projections.wait_catchup_batch(WaitProjectionCatchupBatchRequest(
            items=[WaitItem(name=name, min_seq=ev["seq"]), WaitItem(name=f"{name}-nope", min_seq=1)],
            timeout=Duration(seconds=5)))
        assert batch.results[0].result.caught_up and batch.results[0].error == ""
        assert batch.results[1].result is None and "not found" in batch.results[1].error

        # Paused: the event waits, the wait times out, status says paused; resume delivers it.
        rpc.projections.pause(PauseProjectionRequest(name=name))
        held = kit.emit("entry", {"i": 100})
        timed = rpc.projections.wait_catchup(WaitProjectionCatchupRequest(
            name=name, min_seq=held["seq"], timeout=Duration(seconds=1)))
        assert timed.timed_out and not timed.caught_up and timed.behind_by_events == 1
        assert rpc.projections.get_status(GetProjectionStatusRequest(name=name)).status == "paused"
        rpc.projections.resume(ResumeProjectionRequest(name=name))
        resumed = rpc.projections.wait_catchup(WaitProjectionCatchupRequest(
            name=name, min_seq=held["seq"], timeout=Duration(seconds=20)))
        assert resumed.caught_up
        kinds = [e.change_type for e in rpc.projections.list_history(ListProjectionHistoryRequest(name=name)).entries]
        assert kinds == ["registered"]


def test_registration_validates_and_operations_answer_clear_errors(kit: Kit) -> None:
    name = kit.name("ops")
    with kit.server.rpc() as rpc:
        for bad, needle in ((dict(name="", events=["x"]), "name"),
                            (dict(name=name, events=[]), "at least one"),
                            (dict(name=name, events=["x"], mode="sideways"), "mode"),
                            (dict(name="a b", events=["x"]), "contains")):
            with pytest.raises(IronflowRPCError) as err:
                rpc.projections.register(RegisterProjectionRequest(**bad))
            assert err.value.code == "invalid_argument" and needle in str(err.value), err.value
        first = rpc.projections.register(RegisterProjectionRequest(name=name, events=["a"], mode="managed", version=1))
        assert first.status == "registered"
        again = rpc.projections.register(RegisterProjectionRequest(name=name, events=["a"], mode="managed", version=1))
        assert again.status == "updated"
        changed = rpc.projections.register(RegisterProjectionRequest(name=name, events=["a", "b"], mode="managed",
                                                                     change_reason="follow b too"))
        assert changed.status == "updated"
        with pytest.raises(IronflowRPCError) as kind:
            rpc.projections.register(RegisterProjectionRequest(name=name, events=["a"], mode="external"))
        assert kind.value.code == "invalid_argument"
        hist = rpc.projections.list_history(ListProjectionHistoryRequest(name=name)).entries
        assert [e.change_type for e in hist] == ["updated", "registered"]
        assert hist[0].change_reason == "follow b too" and list(hist[0].previous_definition.events) == ["a"]
        # A registered projection with no saved state: empty state, partition echoed; unknown: not found.
        empty = rpc.projections.get(GetProjectionRequest(name=name, partition="p-1"))
        assert empty.partition == "p-1" and (empty.state is None or empty.state.to_python() == {})
        with pytest.raises(IronflowRPCError) as missing:
            rpc.projections.get(GetProjectionRequest(name=f"{name}-nope"))
        assert missing.value.code == "not_found"
        listed = rpc.projections.list(ListProjectionsRequest(mode="managed"))
        assert name in [p.name for p in listed.projections]
        # A runner call without a lease, or with a made-up one, is refused.
        r = kit.server.request("POST", "/ironflow.v1.ProjectionService/SaveProjectionState",
                               json_body={"name": name, "partitionKey": "", "state": {}, "lastEventSeq": "1",
                                          "lease": {"token": "forged", "epoch": "7"}})
        assert r.status == 409 and r.json()["code"] == "aborted", r
        deleted = kit.server.request("DELETE", f"/api/v1/projections/{name}")
        assert deleted.status == 200 and deleted.json()["status"] == "deleted"
        assert kit.server.request("DELETE", f"/api/v1/projections/{name}").status == 404


def test_the_cursor_never_passes_an_event_an_open_transaction_still_holds(pg_kit: Kit) -> None:
    """Postgres takes seq values before commit. An event whose transaction is still open holds the
    projection back (status says by which backend), later events are not passed over it, and once it
    commits every event is applied exactly once, in seq order. (SQLite's one writer commits in seq
    order: a held write transaction blocks later writes instead, so there is nothing to pass.)"""
    kit = pg_kit
    name = kit.name("ledger")
    kit.runner("ledger")
    kit.until(lambda: kit.status("ledger").get("lease_epoch", 0) >= 1, "the runner's lease")
    before = kit.emit("entry", {"i": 0})
    with kit.server.rpc() as rpc:
        assert rpc.projections.wait_catchup(WaitProjectionCatchupRequest(
            name=name, min_seq=before["seq"], timeout=Duration(seconds=20))).caught_up
        env = _env_of(kit)
        held_id = f"evt_held_{uuid.uuid4().hex[:12]}"
        psql = subprocess.Popen(["psql", kit.server.db_url, "-X", "-q", "-v", "ON_ERROR_STOP=1"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert psql.stdin is not None
            psql.stdin.write(
                "BEGIN;\n"
                "INSERT INTO events (seq, id, env_id, name, data, metadata, source, version, received_at) VALUES "
                f"((pg_current_xact_id()::text::bigint << 16) + 1, '{held_id}', '{env}', '{kit.prefix}.entry', "
                "'{\"held\": true}', '{}', 'test', 1, now());\n"
                "SELECT 'inserted';\n")
            psql.stdin.flush()
            assert psql.stdout is not None
            kit.until(lambda: "inserted" in (psql.stdout.readline() or ""), "the held insert")
            later = [kit.emit("entry", {"i": i}) for i in range(1, 4)]
            status = kit.until(lambda: (s := kit.status("ledger")).get("held_back") and s, "status showing the hold-back")
            assert status["held_back"]["events"] >= 3 and status["held_back"]["backend_pid"], status
            assert status["cursor_seq"] == before["seq"]  # nothing was passed over the open transaction
            sdk_status = rpc.projections.get_status(GetProjectionStatusRequest(name=name))
            assert "held back" in sdk_status.error_message and str(status["held_back"]["backend_pid"]) in sdk_status.error_message
            psql.stdin.write("COMMIT;\n")
            psql.stdin.flush()
            psql.stdin.close()
            assert psql.wait(timeout=10) == 0
        finally:
            if psql.poll() is None:
                psql.kill()
        last = later[-1]
        assert rpc.projections.wait_catchup(WaitProjectionCatchupRequest(
            name=name, min_seq=last["seq"], timeout=Duration(seconds=20))).caught_up
        ids = state_of(rpc, name)["ids"]
        assert ids == [before["id"], held_id, *[e["id"] for e in later]], ids
        assert kit.status("ledger").get("held_back") is None


def _env_of(kit: Kit) -> str:
    """The server's one environment, read from its own database."""
    assert kit.server.db_url is not None
    out = subprocess.run(["psql", kit.server.db_url, "-X", "-Atc", "SELECT env_id FROM events LIMIT 1"],
                         capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip()


def plain_sql(server: Server, query: str) -> list[list[str]]:
    """Rows of `query` run with the database's own client on the server's database."""
    if server.backend == "sqlite":
        path = server.workdir / ".ironflow" / "ironflow.db"
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return [[str(c) for c in row] for row in con.execute(query)]
        finally:
            con.close()
    assert server.db_url
    out = subprocess.run(["psql", server.db_url, "-X", "-At", "-F", "|", "-c", query],
                         capture_output=True, text=True, timeout=60, check=True)
    return [line.split("|") for line in out.stdout.splitlines() if line]


def totals_definition(kit: Kit) -> dict[str, Any]:
    t = f"{kit.prefix}_totals"
    return dict(
        name=kit.name("totals"),
        table_sql=f"CREATE TABLE {t} (customer TEXT NOT NULL PRIMARY KEY, total NUMERIC(12,2) NOT NULL DEFAULT 0, "
                  "orders INTEGER NOT NULL DEFAULT 0, vip BOOLEAN)",
        event_handlers={
            f"{kit.prefix}.order": f"INSERT INTO {t} (customer, total, orders, vip) VALUES "
                                   f"(:data.customer, :data.amount, 1, :data.vip) ON CONFLICT (customer) DO UPDATE "
                                   f"SET total = {t}.total + excluded.total, orders = {t}.orders + 1",
            f"{kit.prefix}.refund": f"UPDATE {t} SET total = total - :data.amount WHERE customer = :data.customer",
        },
        description="order totals per customer",
    )


def query_rows(rpc: IronflowRPC, name: str, **kw: Any) -> tuple[list[str], list[list[Any]], int]:
    resp = rpc.projections.query_sql(QuerySQLProjectionRequest(name=name, **kw))
    return list(resp.columns), [[v.to_python() for v in r.typed_values] for r in resp.rows], resp.total_count


def test_a_sql_projection_is_kept_by_the_server_and_queried_through_the_api_and_plain_sql(kit: Kit) -> None:
    name = kit.name("totals")
    with kit.server.rpc() as rpc:
        created = rpc.projections.create_sql(CreateSQLProjectionRequest(**totals_definition(kit)))
        assert created.status == "created"
        again = rpc.projections.create_sql(CreateSQLProjectionRequest(**totals_definition(kit)))
        assert again.status == "exists"
        expected: dict[str, float] = {}
        last = None
        for i in range(60):
            customer = f"c{i % 3}"
            amount = round(10 + i * 1.25, 2)
            expected[customer] = round(expected.get(customer, 0) + amount, 2)
            last = kit.emit("order", {"customer": customer, "amount": amount, "vip": i % 2 == 0})
        for customer in ("c0", "c1"):
            expected[customer] = round(expected[customer] - 5, 2)
            last = kit.emit("refund", {"customer": customer, "amount": 5})
        assert last is not None
        done = rpc.projections.wait_catchup(WaitProjectionCatchupRequest(
            name=name, min_seq=last["seq"], timeout=Duration(seconds=30)))
        assert done.caught_up and done.mode == "sql", done

        columns, rows, total = query_rows(rpc, name, where="orders > 0", order_by="customer")
        assert columns == ["customer", "total", "orders", "vip"] and total == 3
        assert [r[0] for r in rows] == ["c0", "c1", "c2"]
        # NUMERIC comes back as text (no precision lost), integers as numbers.
        assert {r[0]: float(r[1]) for r in rows} == expected
        assert all(isinstance(r[1], str) for r in rows) and [r[2] for r in rows] == [20, 20, 20]
        _, top, _ = query_rows(rpc, name, where="total > 0", order_by="total DESC", limit=1)
        assert top[0][0] == max(expected, key=lambda c: expected[c])
        _, paged, total = query_rows(rpc, name, order_by="customer", limit=1, offset=2)
        assert [r[0] for r in paged] == ["c2"] and total == 3

        # The same table, read with the database's own client.
        table = kit.status("totals")["table"]
        plain = plain_sql(kit.server, f"SELECT customer, total FROM {table} ORDER BY customer")
        assert {c: float(t) for c, t in plain} == expected

        # Bad queries: a clear 400 naming the problem, nothing run.
        for where, order_by, needle in (("1=1; DROP TABLE events", "", "one expression"),
                                        ("customer IN (SELECT id FROM events)", "", "subqueries"),
                                        ("secret > 1", "", "not a column"),
                                        ("", "pg_sleep(1)", "not allowed")):
            with pytest.raises(IronflowRPCError) as err:
                rpc.projections.query_sql(QuerySQLProjectionRequest(name=name, where=where, order_by=order_by))
            assert err.value.code == "invalid_argument" and needle in str(err.value), err.value
        assert plain_sql(kit.server, f"SELECT count(*) FROM {table}") == [["3"]]

        # A rebuild replays into a shadow table and swaps it in: the same rows.
        before = query_rows(rpc, name, order_by="customer")
        job = rpc.projections.rebuild(RebuildProjectionRequest(name=name)).job
        assert job.status == "running" and job.total_events == 62
        finished = kit.until(lambda: (j := rpc.projections.get_rebuild_job(GetRebuildJobRequest(name=name)).job)
                             .status == "completed" and j, "the rebuild finishing")
        assert finished.events_processed == 62 and finished.progress == 1.0
        assert query_rows(rpc, name, order_by="customer") == before
        # A dry run replays without touching the table.
        dry = rpc.projections.rebuild(RebuildProjectionRequest(name=name, dry_run=True)).job
        assert dry.dry_run
        kit.until(lambda: rpc.projections.get_rebuild_job(GetRebuildJobRequest(name=name)).job.status == "completed",
                  "the dry run finishing")
        assert query_rows(rpc, name, order_by="customer") == before
        assert kit.status("totals")["rebuild"]["dry_run"] is True

        deleted = kit.server.request("DELETE", f"/api/v1/projections/{name}")
        assert deleted.status == 200
        with pytest.raises(Exception):
            plain_sql(kit.server, f"SELECT count(*) FROM {table}")


def test_sql_projection_definitions_are_confined_to_their_own_table(kit: Kit) -> None:
    good = totals_definition(kit)
    t = f"{kit.prefix}_totals"
    order = f"{kit.prefix}.order"
    with kit.server.rpc() as rpc:
        for change, needle in (
            (dict(table_sql="DROP TABLE events"), "CREATE TABLE"),
            (dict(table_sql=f"CREATE TABLE public.{t} (a INT)"), "plain table name"),
            (dict(table_sql=f"CREATE TABLE {t} (a INT REFERENCES runs(seq))"), "not allowed"),
            (dict(table_sql=f"CREATE TABLE {t} (customer TEXT) INHERITS (api_keys)"), "columns and constraints only"),
            (dict(table_sql=f'CREATE TABLE {t} ("a"", b" INT)'), "column name"),
            (dict(event_handlers={order: "DELETE FROM events"}), "only change the projection's table"),
            (dict(event_handlers={order: f"INSERT INTO {t} (customer) SELECT id FROM events"}), "VALUES only"),
            (dict(event_handlers={order: f"UPDATE {t} SET total = (SELECT count(*) FROM runs)"}), "subqueries"),
            (dict(event_handlers={order: f"UPDATE {t} SET orders = 1; DROP TABLE events"}), "one statement"),
            (dict(event_handlers={order: f"INSERT INTO {t} (customer) VALUES ($1)"}), "named parameters"),
            (dict(events=[order, "other"]), "no handler"),
        ):
            with pytest.raises(IronflowRPCError) as err:
                rpc.projections.create_sql(CreateSQLProjectionRequest(**{**good, **change}))
            assert err.value.code == "invalid_argument" and needle in str(err.value), (change, err.value)
        assert rpc.projections.list(ListProjectionsRequest(mode="sql")).total_count == 0 or all(
            p.name != kit.name("totals") for p in rpc.projections.list(ListProjectionsRequest(mode="sql")).projections)
        # A handler the data breaks (NOT NULL): the projection stops in error, saying which event.
        rpc.projections.create_sql(CreateSQLProjectionRequest(**good))
        bad = kit.emit("order", {"amount": 3})  # no customer: the primary key gets NULL
        status = kit.until(lambda: (s := rpc.projections.get_status(GetProjectionStatusRequest(name=kit.name("totals"))))
                           .status == "error" and s, "the projection stopping in error")
        assert bad["id"] in status.error_message and "NOT NULL" in status.error_message, status.error_message
        with pytest.raises(IronflowRPCError) as err:
            rpc.projections.query_sql(QuerySQLProjectionRequest(name=kit.name("nope")))
        assert err.value.code == "not_found"


def test_rebuilding_a_managed_projection_replays_it_to_the_same_state(kit: Kit) -> None:
    name = kit.name("ledger")
    kit.runner("ledger")
    kit.until(lambda: kit.status("ledger").get("lease_epoch", 0) >= 1, "the runner's lease")
    with kit.server.rpc() as rpc:
        last = None
        for i in range(20):
            last = kit.emit("entry", {"i": i})
        assert last is not None
        assert rpc.projections.wait_catchup(WaitProjectionCatchupRequest(
            name=name, min_seq=last["seq"], timeout=Duration(seconds=30))).caught_up
        before = state_of(rpc, name)
        assert len(before["ids"]) == 20
        job = rpc.projections.rebuild(RebuildProjectionRequest(name=name)).job
        assert job.status == "running" and job.total_events == 20
        with pytest.raises(IronflowRPCError) as twice:
            rpc.projections.rebuild(RebuildProjectionRequest(name=name))
        assert twice.value.code == "failed_precondition"
        kit.until(lambda: rpc.projections.get_rebuild_job(GetRebuildJobRequest(name=name)).job.status == "completed",
                  "the runner replaying the projection")
        assert state_of(rpc, name) == before
        assert kit.status("ledger")["lease_epoch"] >= 3  # fenced, then taken again
        with pytest.raises(IronflowRPCError) as dry:
            rpc.projections.rebuild(RebuildProjectionRequest(name=name, dry_run=True))
        assert dry.value.code == "invalid_argument"


def test_a_runner_that_keeps_failing_stops_the_projection_until_it_is_resumed(kit: Kit) -> None:
    name = kit.name("gated")
    kit.runner("gated")
    kit.until(lambda: kit.status("gated").get("lease_epoch", 0) >= 1, "the runner's lease")
    with kit.server.rpc() as rpc:
        ok = kit.emit("job", {"i": 1})
        assert rpc.projections.wait_catchup(WaitProjectionCatchupRequest(
            name=name, min_seq=ok["seq"], timeout=Duration(seconds=20))).caught_up
        poison = kit.emit("job", {"poison": True})
        after = kit.emit("job", {"i": 2})
        status = kit.until(lambda: (s := rpc.projections.get_status(GetProjectionStatusRequest(name=name)))
                           .status == "error" and s, "the projection stopping in error", deadline_s=90)
        assert "keeps failing" in status.error_message and status.last_event_seq == ok["seq"], status
        # ... and the history says so.
        failed = rpc.query.execute_sql(ExecuteSQLRequest(
            query=f"SELECT count(*) FROM ironflow_history WHERE kind = 'projection.failed' "
                  f"AND payload LIKE '%{name}%'" if kit.server.backend == "sqlite" else
                  f"SELECT count(*) FROM ironflow_history WHERE kind = 'projection.failed' "
                  f"AND payload->>'projection' = '{name}'"))
        assert failed.rows[0].values == ["1"], failed
        # Fixed and resumed: it continues from the cursor, every event once, in order.
        (kit.effects.parent / "fixed").write_text("yes")
        assert rpc.projections.resume(ResumeProjectionRequest(name=name)).status == "active"
        assert rpc.projections.wait_catchup(WaitProjectionCatchupRequest(
            name=name, min_seq=after["seq"], timeout=Duration(seconds=30))).caught_up
        assert state_of(rpc, name)["ids"] == [ok["id"], poison["id"], after["id"]]
        # The streamed wait: DONE at once when already caught up.
        frames = list(rpc.projections.wait_catchup_stream(WaitProjectionCatchupRequest(
            name=name, min_seq=after["seq"], timeout=Duration(seconds=5))))
        assert frames and frames[-1].caught_up and frames[-1].kind == 3, frames
