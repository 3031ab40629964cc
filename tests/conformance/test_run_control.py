"""Run control and the continuous history, driven by ironflow-py's rpc client against real pull workers:
pause at a step boundary, inject and resume, patch a failed step and resume, on_exhausted="pause", time
travel between two steps, redaction (checked with SQL in the server's own database), deletion and
TriggerBatch.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
import uuid
from datetime import datetime
from typing import Any

import pytest
from ironflow.rpc import IronflowRPC, IronflowRPCError
from ironflow.rpc.v1 import (
    CancelRunRequest,
    DeleteFunctionRequest,
    DeleteRunRequest,
    DeleteRunsRequest,
    FunctionStatus,
    GetFunctionAtVersionRequest,
    GetFunctionRequest,
    GetPausedStateRequest,
    GetRunRequest,
    GetRunStateAtRequest,
    GetRunTimelineRequest,
    GetStepOutputAtRequest,
    InjectStepOutputRequest,
    ListFunctionHistoryRequest,
    ListRunsRequest,
    PatchStepRequest,
    PauseRunRequest,
    RedactEventRequest,
    RedactRunRequest,
    RedactStepRequest,
    ResumeRunRequest,
    RollbackFunctionRequest,
    RunStatus,
    StepStatus,
    TriggerBatchRequest,
    TriggerRequest,
    UpdateFunctionStatusRequest,
)
from protobuf.wkt import Timestamp

from ifconf import Server, emit_rpc, register, struct, value
from workerkit import WorkerKit


@pytest.fixture
def ctl(wk: WorkerKit) -> Any:
    client = wk.server.rpc()
    try:
        yield client
    finally:
        client.close()


def rpc_code(call: Any) -> str:
    with pytest.raises(IronflowRPCError) as exc:
        call()
    return exc.value.code


def names(steps: list[dict[str, Any]]) -> list[str]:
    return [s["name"] for s in steps]


def count(wk: WorkerKit, rid: str, what: str) -> int:
    return wk.whats(rid).count(what)


def test_pause_at_a_step_boundary_then_inject_and_resume(wk: WorkerKit, ctl: IronflowRPC) -> None:
    wk.worker("control")
    # c waits for a gate too, so the worker's next checkpoint (b done) is the boundary the server sees.
    rid = wk.start_run("edit", {"gate": "b-open", "gate_c": "c-open"})
    wk.wait_effect("b:blocked", rid)

    assert ctl.runs.pause(PauseRunRequest(run_id=rid)).status == "pause_requested"
    assert ctl.runs.pause(PauseRunRequest(run_id=rid)).status == "pause_requested", "a second pause changes nothing"
    assert ctl.runs.get(GetRunRequest(id=rid)).pause_requested is True

    wk.open_gate("b-open")
    paused = wk.wait_status(rid, "paused")
    assert names(wk.steps(rid)) == ["a", "b"], "the run stops at the boundary after b; c has not run"
    assert "c" not in wk.whats(rid), "the handler was stopped at the boundary"
    run = ctl.runs.get(GetRunRequest(id=rid))
    assert run.status == RunStatus.PAUSED and run.pause_reason == "injection" and not run.pause_requested, run
    assert paused["status"] == "paused"

    state = ctl.runs.get_paused_state(GetPausedStateRequest(run_id=rid))
    assert [(s.name, s.status, json.loads(s.output)) for s in state.steps] == [
        ("a", "completed", 1), ("b", "completed", 2)], state
    assert state.pause_reason == "injection"
    b_row = state.steps[1].id

    injected = ctl.runs.inject_step_output(InjectStepOutputRequest(
        run_id=rid, step_id=b_row, new_output=b"40", reason="b was wrong"))
    assert json.loads(injected.previous_output) == 2, injected
    assert ctl.runs.get_paused_state(GetPausedStateRequest(run_id=rid)).steps[1].injected is True

    wk.open_gate("c-open")
    resumed = ctl.runs.resume(ResumeRunRequest(run_id=rid))
    assert resumed.status != RunStatus.PAUSED, resumed
    done = wk.wait_status(rid, "completed")
    assert done["output"] == {"a": 1, "b": 40, "c": 41, "secret": None}, done
    assert count(wk, rid, "c") == 1, wk.whats(rid)
    assert count(wk, rid, "b") == 1 and count(wk, rid, "a") == 1, "memoized steps did not run again"
    kinds = wk.kinds(rid)
    for kind in ("run.pause_requested", "run.paused", "step.injected", "run.unpaused", "run.completed"):
        assert kind in kinds, kinds
    assert kinds.index("run.pause_requested") < kinds.index("run.paused") < kinds.index("step.injected") \
        < kinds.index("run.unpaused") < kinds.index("run.completed"), kinds
    injected_entry = next(e for e in wk.history(rid) if e["kind"] == "step.injected")
    assert injected_entry["payload"]["previous_output"] == 2 and injected_entry["payload"]["reason"] == "b was wrong"
    assert injected_entry["payload"]["actor_id"], injected_entry

    # Only a paused run takes an injection; an ended one refuses it and writes nothing.
    assert rpc_code(lambda: ctl.runs.inject_step_output(InjectStepOutputRequest(
        run_id=rid, step_id=b_row, new_output=b"1", reason="late"))) == "failed_precondition"
    assert rpc_code(lambda: ctl.runs.pause(PauseRunRequest(run_id=rid))) == "failed_precondition"


def test_a_sleeping_run_pauses_at_once_and_its_sleep_waits_for_the_resume(wk: WorkerKit, ctl: IronflowRPC) -> None:
    wk.worker("nap")
    rid = wk.start_run("nap", {"sleep": 1})
    wk.wait_status(rid, "waiting")
    assert ctl.runs.pause(PauseRunRequest(run_id=rid)).status == "paused"
    assert wk.run(rid)["status"] == "paused"
    nap = next(s for s in wk.steps(rid) if s["name"] == "nap")
    # The precondition of the check below: the sleep's due instant has passed.
    wk.until(lambda: time.time() > nap_due(wk, rid) + 1.0, "the sleep's due instant to pass", deadline_s=10)
    assert wk.run(rid)["status"] == "paused", "a sleep that came due while paused waits for the resume"
    assert "after" not in wk.whats(rid)
    assert nap["status"] == "sleeping"

    ctl.runs.resume(ResumeRunRequest(run_id=rid))
    wk.wait_status(rid, "completed")
    kinds = wk.kinds(rid)
    assert kinds.index("run.paused") < kinds.index("run.unpaused"), kinds
    dispatches = [i for i, k in enumerate(kinds) if k == "run.dispatched"]
    assert dispatches[-1] > kinds.index("run.unpaused"), f"the wake-up dispatch came after the resume: {kinds}"


def nap_due(wk: WorkerKit, rid: str) -> float:
    """When the 1 s nap comes due: its yield's instant plus the sleep."""
    yielded = next(e for e in wk.history(rid) if e["kind"] == "run.yielded")
    return ts_of(yielded) + 1.0


def test_patch_a_failed_step_and_resume_to_completion(wk: WorkerKit, ctl: IronflowRPC) -> None:
    wk.worker("control")
    rid = wk.start_run("broken")
    failed = wk.wait_status(rid, "failed")
    assert "upstream returned garbage" in json.dumps(failed["error"]), failed
    fetch = next(s for s in wk.steps(rid) if s["name"] == "fetch")
    assert fetch["status"] == "failed", fetch

    # Not a step row id: a clear 400.
    assert rpc_code(lambda: ctl.runs.patch_step(PatchStepRequest(step_id="nonsense", output=struct({})))) \
        == "invalid_argument"
    step = ctl.runs.patch_step(PatchStepRequest(
        step_id=f"{rid}:{fetch['step_id']}", output=struct({"price": 21}), reason="upstream fixed by hand"))
    assert step.status == StepStatus.COMPLETED, step
    assert step.patched_by and step.patched_at is not None, step

    ctl.runs.resume(ResumeRunRequest(run_id=rid))
    done = wk.wait_status(rid, "completed")
    assert done["output"] == {"total": 42}, done
    assert count(wk, rid, "fetch") == 1, "the patched step is memoized, not run again"
    patched = next(e for e in wk.history(rid) if e["kind"] == "step.patched")
    assert patched["payload"]["previous_status"] == "failed" and patched["payload"]["output"] == {"price": 21}


def test_exhausted_retries_pause_the_run_without_compensating(wk: WorkerKit, ctl: IronflowRPC) -> None:
    wk.worker("control")
    gate = f"fix-{uuid.uuid4().hex[:6]}"
    rid = wk.start_run("exhaust", {"gate": gate})
    wk.wait_status(rid, "paused")
    run = ctl.runs.get(GetRunRequest(id=rid))
    assert run.pause_reason == "retries_exhausted" and run.attempt == 2, run
    assert count(wk, rid, "call") == 2 and "undo:prep" not in wk.whats(rid), wk.whats(rid)

    wk.open_gate(gate)
    ctl.runs.resume(ResumeRunRequest(run_id=rid))
    done = wk.wait_status(rid, "completed")
    assert done["output"] == {"call": "up"}, done
    assert count(wk, rid, "prep") == 1 and "undo:prep" not in wk.whats(rid), wk.whats(rid)


def ts_of(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["recorded_at"].replace("Z", "+00:00")).timestamp()


def test_time_travel_to_an_instant_between_two_steps(wk: WorkerKit, ctl: IronflowRPC) -> None:
    wk.worker("control")
    rid = wk.start_run("edit", {"gate": "tt-b"})
    wk.wait_step(rid, "a")
    between = Timestamp.now()
    wk.open_gate("tt-b")
    wk.wait_status(rid, "completed")

    then = ctl.time_travel.get_run_state_at(GetRunStateAtRequest(run_id=rid, timestamp=between)).snapshot
    assert then.status == "running", then
    assert [(s.name, s.status, json.loads(s.output)) for s in then.steps] == [("a", "completed", 1)], then
    assert json.loads(then.input) == {"gate": "tt-b"}

    now = ctl.time_travel.get_run_state_at(GetRunStateAtRequest(run_id=rid, timestamp=Timestamp.now())).snapshot
    assert now.status == "completed"
    assert [(s.name, json.loads(s.output)) for s in now.steps] == [("a", 1), ("b", 2), ("c", 3)], now
    assert all(s.duration_ms >= 0 and s.completed_at is not None for s in now.steps)

    a_id = now.steps[0].step_id
    out = ctl.time_travel.get_step_output_at(GetStepOutputAtRequest(run_id=rid, step_id=a_id, timestamp=between))
    assert json.loads(out.output) == 1 and out.status == "completed" and not out.patched

    # An edit is a new fact: the past stays as it was, the present shows the edit and the original.
    ctl.runs.patch_step(PatchStepRequest(step_id=f"{rid}:{a_id}", output_value=value(100), reason="audit fix"))
    again = ctl.time_travel.get_run_state_at(GetRunStateAtRequest(run_id=rid, timestamp=between)).snapshot
    assert [(s.name, json.loads(s.output), s.patched) for s in again.steps] == [("a", 1, False)], again
    latest = ctl.time_travel.get_run_state_at(GetRunStateAtRequest(run_id=rid)).snapshot
    a_now = latest.steps[0]
    assert json.loads(a_now.output) == 100 and a_now.patched and json.loads(a_now.original_output) == 1, a_now

    timeline = ctl.time_travel.get_run_timeline(GetRunTimelineRequest(run_id=rid)).events
    types = [e.event_type for e in timeline]
    assert types[0] == "run.created" and "run.completed" in types and types[-1] == "step.patched", types
    assert next(e for e in timeline if e.event_type == "step.patched").significant
    assert not next(e for e in timeline if e.event_type == "step.completed").significant
    assert any(e.step_name == "b" and e.event_type == "step.completed" for e in timeline), timeline

    before = Timestamp.from_seconds(int(ts_of(wk.history(rid)[0])) - 3600)
    assert rpc_code(lambda: ctl.time_travel.get_run_state_at(
        GetRunStateAtRequest(run_id=rid, timestamp=before))) == "failed_precondition"


def database_rows(server: Server, tables: list[str]) -> str:
    """Every row of `tables` as text, read from the server's own database."""
    if server.backend == "sqlite":
        path = server.workdir / ".ironflow" / "ironflow.db"
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return "\n".join(repr(row) for t in tables for row in con.execute(f"SELECT * FROM {t}"))
        finally:
            con.close()
    assert server.db_url
    union = " UNION ALL ".join(f"SELECT t::text FROM {t} t" for t in tables)
    r = subprocess.run(["psql", server.db_url, "-X", "-At", "-c", union],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_redaction_leaves_no_original_payload_in_any_table(wk: WorkerKit, ctl: IronflowRPC) -> None:
    wk.worker("control", "cancel")
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    out = wk.emit("edit", {"secret": secret})
    rid, eid = out["run_ids"][0], out["event_id"]
    done = wk.wait_status(rid, "completed")
    assert done["output"]["secret"] == secret
    tables = ["runs", "steps", "history", "events", "jobs", "waits"]
    assert secret in database_rows(wk.server, tables), "the test must see the payload before redaction"

    # Not while a run is unfinished: its resumed handler would read the outputs.
    sleeper = wk.start_run("long")
    wk.wait_status(sleeper, "waiting")
    assert rpc_code(lambda: ctl.runs.redact(RedactRunRequest(run_id=sleeper))) == "failed_precondition"

    c_row = f"{rid}:{next(s['step_id'] for s in wk.steps(rid) if s['name'] == 'c')}"
    ctl.runs.redact_step(RedactStepRequest(step_id=c_row))
    c = next(s for s in wk.steps(rid) if s["name"] == "c")
    assert c["output"]["$redacted"] is True and len(c["output"]["sha256"]) == 64, c
    ctl.runs.redact(RedactRunRequest(run_id=rid))
    ctl.runs.redact(RedactRunRequest(run_id=rid))  # idempotent
    ctl.events.redact(RedactEventRequest(event_id=eid))
    assert secret not in database_rows(wk.server, tables)
    run = wk.run(rid)
    assert run["output"]["$redacted"] is True and run["input"]["$redacted"] is True, run
    kinds = wk.kinds(rid)
    assert "step.redacted" in kinds and "run.redacted" in kinds, kinds
    completed = [e for e in wk.history(rid) if e["kind"] == "run.completed"][0]
    assert completed["payload"]["output"]["$redacted"] is True, completed

    # Deleting: the run and its steps go, the history keeps its entries and says so.
    assert rpc_code(lambda: ctl.runs.delete(DeleteRunRequest(id=sleeper))) == "failed_precondition"
    ctl.runs.delete(DeleteRunRequest(id=rid))
    assert rpc_code(lambda: ctl.runs.get(GetRunRequest(id=rid))) == "not_found"
    history = database_rows(wk.server, ["history"])
    assert any(rid in line and "run.deleted" in line for line in history.splitlines()), "a run.deleted entry"
    assert sum(rid in line and "run.completed" in line for line in history.splitlines()) == 1, \
        "the deleted run's entries stay in the history"


def test_delete_runs_by_function_and_trigger_batch(wk: WorkerKit, ctl: IronflowRPC) -> None:
    wk.worker("cancel")
    batch = ctl.runs.trigger_batch(TriggerBatchRequest(events=[
        TriggerRequest(event=wk.event("quick"), data=struct({"n": 1})),
        TriggerRequest(event="", data=struct({})),
        TriggerRequest(event=wk.event("quick"), data=struct({"n": 2})),
    ]))
    assert len(batch.results) == 3, batch
    ok1, bad, ok2 = batch.results
    assert ok1.error is None and len(ok1.run_ids) == 1 and ok1.event_id, ok1
    assert ok2.error is None and len(ok2.run_ids) == 1, ok2
    assert bad.error is not None and bad.error.code == "invalid_argument" and not bad.run_ids, bad
    for rid in (ok1.run_ids[0], ok2.run_ids[0]):
        wk.wait_status(rid, "completed")

    assert rpc_code(lambda: ctl.runs.delete_many(DeleteRunsRequest())) == "invalid_argument"
    assert rpc_code(lambda: ctl.runs.delete_many(
        DeleteRunsRequest(function_id=wk.fid("quick"), status=RunStatus.RUNNING))) == "invalid_argument"
    deleted = ctl.runs.delete_many(DeleteRunsRequest(function_id=wk.fid("quick")))
    assert deleted.deleted == 2, deleted
    assert ctl.runs.delete_many(DeleteRunsRequest(function_id=wk.fid("quick"))).deleted == 0
    assert wk.runs_of("quick") == []


def test_function_status_history_and_rollback(rpc: IronflowRPC, uid: str) -> None:
    fid, event = f"fv-{uid}", f"fv.{uid}"
    register(rpc, fid, [event], description="first")
    register(rpc, fid, [event], description="second", change_reason="reword")
    assert rpc.functions.get(GetFunctionRequest(id=fid)).version == 2

    paused = rpc.functions.update_status(UpdateFunctionStatusRequest(id=fid, status=FunctionStatus.PAUSED))
    assert paused.status == FunctionStatus.PAUSED
    assert not emit_rpc(rpc, event, {}).run_ids, "a paused function starts no runs for new events"

    rolled = rpc.functions.rollback(RollbackFunctionRequest(function_id=fid, version=1, change_reason="bad deploy"))
    assert rolled.function.version == 3 and rolled.function.description == "first", rolled
    assert rpc_code(lambda: rpc.functions.rollback(RollbackFunctionRequest(function_id=fid, version=1))) \
        == "failed_precondition", "rolling back to the current definition changes nothing"
    assert rpc_code(lambda: rpc.functions.rollback(RollbackFunctionRequest(function_id=fid, version=99))) \
        == "not_found"

    rpc.functions.update_status(UpdateFunctionStatusRequest(id=fid, status=FunctionStatus.ACTIVE))
    assert len(emit_rpc(rpc, event, {}).run_ids) == 1

    history = rpc.functions.list_history(ListFunctionHistoryRequest(function_id=fid, limit=10))
    summary = [(e.entity_version, e.change_type, e.function_snapshot.version, e.function_snapshot.status)
               for e in history.entries]
    assert summary == [
        (1, "update", 1, FunctionStatus.ACTIVE),
        (2, "update", 2, FunctionStatus.ACTIVE),
        (3, "status_change", 2, FunctionStatus.PAUSED),
        (4, "rollback", 3, FunctionStatus.PAUSED),
        (5, "status_change", 3, FunctionStatus.ACTIVE),
    ], summary
    assert not history.has_more
    assert history.entries[3].change_reason == "bad deploy" and history.entries[3].actor_id
    page = rpc.functions.list_history(ListFunctionHistoryRequest(function_id=fid, limit=2, from_version=2))
    assert [e.entity_version for e in page.entries] == [3, 4] and page.has_more, page
    at = rpc.functions.get_at_version(GetFunctionAtVersionRequest(function_id=fid, version=2)).entry
    assert at.function_snapshot.description == "second" and at.change_reason == "reword", at

    # Deleting: refused while runs are unfinished (the run above has no worker), then allowed.
    assert rpc_code(lambda: rpc.functions.delete(DeleteFunctionRequest(id=fid))) == "failed_precondition"
    for run in rpc.runs.list(ListRunsRequest(function_id=fid)).runs:
        rpc.runs.cancel(CancelRunRequest(id=run.id))
    rpc.functions.delete(DeleteFunctionRequest(id=fid))
    assert rpc_code(lambda: rpc.functions.get(GetFunctionRequest(id=fid))) == "not_found"
    after = rpc.functions.list_history(ListFunctionHistoryRequest(function_id=fid, limit=10)).entries
    assert after[-1].change_type == "delete" and len(after) == 6, "the history keeps every definition"
