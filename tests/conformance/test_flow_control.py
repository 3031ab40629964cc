"""Scheduling and flow control through ironflow-py's worker on both backends: cron triggers (exactly one
run per tick, also with two nodes on one Postgres; a paused function's ticks pass without runs), debounce
(a burst collapses into one run with the last event), throttle (a start rate, nothing dropped), actor keys
(one run at a time per key, in event order) and step timeouts (an abandoned step is a failed attempt)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import ifconf
import pytest
from ifconf import Server
from ironflow.rpc import IronflowRPC
from ironflow._gen.ironflow_pb import GetFunctionRequest, UpdateFunctionStatusRequest
from ironflow._gen.types_pb import FunctionStatus
from workerkit import WorkerKit


def ticks_seen(wk: WorkerKit) -> list[str]:
    return [w.removeprefix("tick:") for w in wk.whats() if w.startswith("tick:")]


def tick_seconds(ticks: list[str]) -> list[int]:
    return [int(ifconf.parse_ts(t).timestamp()) for t in ticks]


def assert_one_run_per_tick(wk: WorkerKit) -> list[dict[str, Any]]:
    runs = wk.runs_of("cron")
    completed = [r for r in runs if r["status"] == "completed"]
    ticks = [r["output"]["tick"] for r in completed]
    assert len(ticks) == len(set(ticks)), f"a tick started more than one run: {sorted(ticks)}"
    seconds = sorted(tick_seconds(ticks))
    # A per-second schedule: whole seconds, none skipped between the first and the last.
    assert all(ifconf.parse_ts(t).microsecond == 0 for t in ticks), ticks
    assert seconds == list(range(seconds[0], seconds[0] + len(seconds))), seconds
    for r in completed:
        assert r["output"]["source"] == "cron" and r["output"]["name"] == "ironflow/cron", r["output"]
    return completed


def test_cron_fires_once_per_tick(wk: WorkerKit) -> None:
    wk.worker("cron")
    wk.until(lambda: len([r for r in wk.runs_of("cron") if r["status"] == "completed"]) >= 4,
             "four cron ticks completed", deadline_s=30)
    completed = assert_one_run_per_tick(wk)
    # Every step body ran once per run (no tick was dispatched twice).
    ticks = ticks_seen(wk)
    assert len(ticks) == len(set(ticks)), ticks
    assert len(completed) >= 4

    # The run's event says which tick it is.
    run = completed[0]
    event = wk.server.request("GET", f"/api/v1/events/{run['event_id']}").json()
    assert event["source"] == "cron", event
    assert event["data"]["tick"] == run["output"]["tick"], event
    assert event["data"]["cron"] == "* * * * * *", event

    # Paused: the schedule keeps moving, the ticks pass without runs.
    rpc = wk.server.rpc()
    try:
        rpc.functions.update_status(UpdateFunctionStatusRequest(id=wk.fid("cron"), status=FunctionStatus.PAUSED))
        before = {r["id"] for r in wk.runs_of("cron")}
        first = next_run(rpc, wk.fid("cron"))
        # Two ticks after the pause took effect have been passed over by the scheduler.
        wk.until(lambda: next_run(rpc, wk.fid("cron")) >= first + 2, "the paused schedule to move two ticks on",
                 deadline_s=15)
        after = {r["id"] for r in wk.runs_of("cron")}
        # At most the tick already being fired when the pause landed.
        assert len(after - before) <= 1, (before, after)
        rpc.functions.update_status(UpdateFunctionStatusRequest(id=wk.fid("cron"), status=FunctionStatus.ACTIVE))
        resumed = len(after)
        wk.until(lambda: len(wk.runs_of("cron")) >= resumed + 2, "runs again once active", deadline_s=15)
        # Off again so the session's server does not keep ticking for the rest of the suite.
        rpc.functions.update_status(UpdateFunctionStatusRequest(id=wk.fid("cron"), status=FunctionStatus.PAUSED))
    finally:
        rpc.close()


def next_run(rpc: IronflowRPC, fid: str) -> int:
    got = rpc.functions.get(GetFunctionRequest(id=fid))
    assert got.next_run is not None, f"a cron function shows its next tick: {got}"
    return int(got.next_run.seconds)


def test_cron_ticks_once_with_two_nodes_on_one_postgres(postgres_admin: str, tmp_path: Path) -> None:
    first, db = ifconf.start_server("postgres", ("--lease-ttl-secs", "3"))
    second = Server(backend="postgres", workdir=Path(tempfile.mkdtemp(prefix="ironflow-conf-postgres-")),
                    db_url=first.db_url, extra_args=["--lease-ttl-secs", "3"])
    kit = WorkerKit(first, tmp_path)
    try:
        second.key_file.write_text(first.api_key)  # one database, one tenancy: the first boot's key
        second.start()
        kit.worker("cron")
        # Both nodes run the scheduler over the same schedule row; each tick must start one run.
        kit.until(lambda: len([r for r in kit.runs_of("cron") if r["status"] == "completed"]) >= 6,
                  "six cron ticks completed with two nodes", deadline_s=40)
        assert_one_run_per_tick(kit)
        ticks = ticks_seen(kit)
        assert len(ticks) == len(set(ticks)), ticks
    finally:
        kit.close()
        second.kill()
        shutil.rmtree(second.workdir, ignore_errors=True)
        ifconf.cleanup(first, db)


def test_debounce_collapses_a_burst_into_one_run_with_the_last_event(wk: WorkerKit) -> None:
    wk.worker("debounce")
    for n in range(10):
        out = wk.emit("debounce", {"user": "u1", "n": n})
        assert out["run_ids"] == [], f"a debounced event starts no run at once: {out}"
    other = wk.emit("debounce", {"user": "u2", "n": 100})
    assert other["run_ids"] == []

    # Pending: one entry per key, carrying the latest event.
    entries = wk.server.request("GET", "/api/v1/debounce/entries").json()
    mine = {e["debounce_key"]: e for e in entries if e["function_id"] == wk.fid("debounce")}
    assert set(mine) <= {"u1", "u2"}, mine

    def finished() -> list[dict[str, Any]] | None:
        runs = wk.runs_of("debounce")
        return runs if len(runs) >= 2 and all(r["status"] == "completed" for r in runs) else None
    runs = wk.until(finished, "the debounced runs completed", deadline_s=20)
    by_user = {r["output"]["user"]: r["output"]["n"] for r in runs}
    assert by_user == {"u1": 9, "u2": 100}, runs
    # Nothing else is pending: the ten events made one run.
    left = [e for e in wk.server.request("GET", "/api/v1/debounce/entries").json()
            if e["function_id"] == wk.fid("debounce")]
    assert left == [], left
    assert len(wk.runs_of("debounce")) == 2
    assert [w for w in wk.whats() if w.startswith("debounced:u1")] == ["debounced:u1:9"]


def test_a_pending_debounce_is_listed_and_can_be_dropped(wk: WorkerKit) -> None:
    wk.worker("debounce")
    first = wk.emit("debounce-long", {"user": "drop/me", "n": 1})
    wk.emit("debounce-long", {"user": "drop/me", "n": 2})
    entries = [e for e in wk.server.request("GET", "/api/v1/debounce/entries").json()
               if e["function_id"] == wk.fid("debounce-long")]
    assert len(entries) == 1, entries
    entry = entries[0]
    assert entry["debounce_key"] == "drop/me" and entry["period_ms"] == 30_000, entry
    assert entry["event_id"] != first["event_id"], "the entry carries the latest event"
    assert ifconf.parse_ts(entry["fires_at"]) > ifconf.parse_ts(entry["armed_at"]), entry

    rest = wk.server.rest()
    rest.debounce_delete_entries(entry["environment_id"], wk.fid("debounce-long"), "drop/me")
    left = [e for e in wk.server.request("GET", "/api/v1/debounce/entries").json()
            if e["function_id"] == wk.fid("debounce-long")]
    assert left == [], left
    again = wk.server.request(
        "DELETE", f"/api/v1/debounce/entries/{entry['environment_id']}/{wk.fid('debounce-long')}/ZHJvcC9tZQ")
    ifconf.assert_json_error(again, 404)
    bad = wk.server.request(
        "DELETE", f"/api/v1/debounce/entries/{entry['environment_id']}/{wk.fid('debounce-long')}/%21%21")
    ifconf.assert_json_error(bad, 400)


def test_throttle_spreads_starts_and_drops_nothing(wk: WorkerKit) -> None:
    wk.worker("throttle")
    rids = [wk.start_run("throttle", {"n": n}) for n in range(10)]
    outputs = [wk.wait_status(rid, "completed", deadline_s=30)["output"]["n"] for rid in rids]
    assert sorted(outputs) == list(range(10)), "every throttled run ran"

    # What the server gave out: each run's start (run.created says when a throttled one may start).
    def scheduled(rid: str) -> float:
        created = next(e for e in wk.history(rid) if e["kind"] == "run.created")
        return ifconf.parse_ts(created["payload"].get("throttled_until") or created["recorded_at"]).timestamp()
    slots = sorted(scheduled(rid) for rid in rids)
    for i, t in enumerate(slots):
        # Slots are kept in whole milliseconds, the history in microseconds.
        assert len([u for u in slots[i:] if u < t + 0.999]) <= 2, f"more than 2 starts in a second: {slots}"
    # And what the worker saw: no run started before its slot, and ten starts span about four seconds.
    starts = {e["run"]: e["t"] for e in wk.effects() if e["what"].startswith("throttled:")}
    assert len(starts) == 10
    for rid in rids:
        assert starts[rid] >= scheduled(rid) - 0.05, (rid, starts[rid], scheduled(rid))
    assert max(starts.values()) - min(starts.values()) >= 3.5, sorted(starts.values())


def test_actor_runs_one_at_a_time_in_event_order(wk: WorkerKit) -> None:
    wk.worker("actor")
    rids = [wk.start_run("actor", {"user": "alice", "n": n}) for n in range(5)]
    bob = wk.start_run("actor", {"user": "bob", "n": 0})
    for rid in [*rids, bob]:
        wk.wait_status(rid, "completed", deadline_s=30)
    alice = [(e["what"], e["t"]) for e in wk.effects() if e["what"].startswith("actor:") and ":alice:" in e["what"]]
    # start 0, end 0, start 1, end 1, …: never two alice runs at once, and in the order emitted.
    assert [w for w, _ in alice] == [f"actor:{edge}:alice:{n}" for n in range(5) for edge in ("start", "end")], alice
    times = [t for _, t in alice]
    assert times == sorted(times), alice


def test_step_timeout_fails_the_attempt_and_the_retry_completes(wk: WorkerKit) -> None:
    wk.worker("slowstep")
    rid = wk.start_run("slowstep")
    run = wk.wait_status(rid, "completed", deadline_s=30)
    assert run["output"] == {"attempt": 2}, run
    assert wk.whats(rid).count("slowstep:start") == 2
    kinds = wk.kinds(rid)
    assert "run.retrying" in kinds or kinds.count("run.dispatched") == 2, kinds
