"""Crash recovery and fencing for pull workers.

* a worker process SIGKILLed mid-run: its lease expires (short `--lease-ttl-secs`), another worker resumes
  the run from the durable steps, and no completed step body runs twice;
* the server SIGKILLed while a run sleeps and again while it waits for an event, restarted on the same
  database and port: the run completes;
* a stale worker (raw HTTP, acting as a fake worker whose lease expired) is refused with 409
  STALE_EXECUTION and changes nothing, while the worker that reclaimed the job completes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ifconf
from ifconf import Server
from workerkit import LEASE_TTL_S, WorkerKit, step_by_name


def test_worker_crash_resumes_on_another_worker_without_rerunning_steps(wk: WorkerKit) -> None:
    first = wk.worker("three", name="doomed")
    rid = wk.start_run("three", {"n": 1, "gate": "s3"})
    wk.wait_step(rid, "s2")                      # steps 1 and 2 are durable on the server
    wk.wait_effect("s3:blocked", rid)            # and the first worker is stuck inside step 3
    assert first.alive()
    first.kill()
    t_kill = time.monotonic()

    wk.open_gate("s3")
    second = wk.worker("three", name="rescuer")
    run = wk.wait_status(rid, "completed", deadline_s=LEASE_TTL_S + 20)
    recovered_after = time.monotonic() - t_kill

    assert run["output"] == {"a": 2, "b": 20, "c": 27}, run
    effects = wk.effects(rid)
    assert [(e["what"], e["pid"]) for e in effects if not e["what"].endswith(":blocked")] == [
        ("s1", first.proc.pid), ("s2", first.proc.pid), ("s3", second.proc.pid),
    ], effects
    steps = wk.steps(rid)
    assert [(s["name"], s["status"], s["output"]) for s in steps] == [
        ("s1", "completed", 2), ("s2", "completed", 20), ("s3", "completed", 27)], steps

    dispatches = [e["payload"] for e in wk.history(rid) if e["kind"] == "run.dispatched"]
    assert [d["worker_id"] for d in dispatches] == [first.worker_id, second.worker_id], dispatches
    assert dispatches[1]["execution_seq"] > dispatches[0]["execution_seq"], dispatches
    assert recovered_after >= LEASE_TTL_S - 1.5, f"the job was reclaimed before its lease could expire: {dispatches}"


# ── server crash ───────────────────────────────────────────────────────────────────────────────────


@pytest.fixture
def own_server(backend: str) -> Iterator[Server]:
    """A server of its own (the test SIGKILLs and restarts it), same short lease TTL."""
    srv, db = ifconf.start_server(backend, ("--lease-ttl-secs", str(LEASE_TTL_S)))
    try:
        yield srv
    finally:
        ifconf.cleanup(srv, db)


def test_server_crash_while_sleeping_and_waiting(own_server: Server, tmp_path: Path) -> None:
    kit = WorkerKit(own_server, tmp_path)
    try:
        kit.worker("nap")
        rid = kit.start_run("nap", {"sleep": 1, "wait": True, "id": "k-1"})
        kit.wait_step(rid, "nap", "sleeping")

        # Crash 1: SIGKILL while the run sleeps; restart on the same database and port.
        own_server.kill()
        own_server.start(port=own_server.port)
        kit.wait_step(rid, "reply", "waiting")   # the sleep ended after the restart; now it waits
        assert kit.run(rid)["status"] == "waiting"

        # Crash 2: SIGKILL while it waits for the event; the wait must survive the restart.
        own_server.kill()
        own_server.start(port=own_server.port)
        assert kit.run(rid)["status"] == "waiting"
        kit.emit("nap-reply", {"id": "k-1", "ok": True})
        run = kit.wait_status(rid, "completed")

        assert run["output"]["reply"] == {"id": "k-1", "ok": True}, run
        assert run["output"]["slept"] >= 1.0, run
        assert kit.whats(rid) == ["before", "after", "replied"], kit.effects(rid)
        steps = step_by_name(kit.steps(rid))
        assert list(steps) == ["before", "nap", "after", "reply", "replied"], steps
        assert all(s["status"] == "completed" for s in steps.values()), steps
        assert kit.kinds(rid)[-1] == "run.completed"
    finally:
        kit.close()


# ── stale fence (raw HTTP fake workers) ───────────────────────────────────────────────────────────


class FakeWorker:
    """Speaks the REST pull protocol by hand (no heartbeats), to own and then lose a lease."""

    def __init__(self, server: Server, worker_id: str, fid: str) -> None:
        self.server, self.id = server, worker_id
        r = server.request("POST", f"/api/v1/workers/{worker_id}/register", json_body={
            "worker_id": worker_id, "hostname": "fake", "function_ids": [fid], "max_concurrent_jobs": 1,
            "labels": {}, "version": {"sdk": "conformance", "runtime": "python"}})
        assert r.status == 200, r

    def poll(self, wait: int) -> list[dict[str, Any]]:
        r = self.server.request("GET", f"/api/v1/workers/{self.id}/jobs", params={"available": 1, "wait": wait})
        if r.status == 204:
            return []
        assert r.status == 200, r
        jobs = r.json()["jobs"]
        assert len(jobs) <= 1, jobs
        return jobs

    def ack(self, job: dict[str, Any]) -> ifconf.Resp:
        return self.server.request("PUT", f"/api/v1/workers/{self.id}/jobs/{job['job_id']}/ack", json_body={
            "run_id": job["run_id"], "execution_seq": job["execution_seq"], "lease_token": job["lease_token"]})

    def put(self, job: dict[str, Any], body: dict[str, Any]) -> ifconf.Resp:
        body = {**body, "execution_seq": job["execution_seq"], "lease_token": job["lease_token"]}
        return self.server.request("PUT", f"/api/v1/workers/{self.id}/jobs/{job['job_id']}", json_body=body)


def step_row(rid: str, name: str, output: Any) -> dict[str, Any]:
    now = ifconf.fmt_ts(ifconf.dt.datetime.now(ifconf.dt.timezone.utc))
    return {"id": f"{rid}:{name}:0", "name": name, "type": "invoke", "status": "completed", "output": output,
            "started_at": now, "ended_at": now, "duration_ms": 0}


def assert_stale(resp: ifconf.Resp) -> None:
    assert resp.status == 409, resp
    body = resp.json()
    assert body.get("error") == "STALE_EXECUTION", f"expected {{'error': 'STALE_EXECUTION'}}, got {body}"


def test_stale_worker_result_refused(lease_server: Server) -> None:
    srv = lease_server
    u = ifconf.uid()
    fid, event = f"{u}-fenced", f"{u}.fenced"
    r = srv.connect_json("RegisterFunction", {
        "id": fid, "name": fid, "triggers": [{"event": event}], "preferredMode": "EXECUTION_MODE_PULL",
        "retry": {"maxAttempts": 2, "initialDelayMs": 50}})
    assert r.status == 200, r
    stale, fresh = FakeWorker(srv, f"{u}-stale", fid), FakeWorker(srv, f"{u}-fresh", fid)
    rid = ifconf.emit_rest(srv, event, {"x": 1})["run_ids"][0]

    (job1,) = stale.poll(wait=5)
    assert job1["run_id"] == rid and job1["completed_steps"] == [], job1
    assert stale.ack(job1).status == 200
    r = stale.put(job1, {"status": "progress", "steps": [step_row(rid, "a", 1)], "step_offset": 0})
    assert r.status == 200, r

    # No heartbeat: once the lease expires the attempt has failed (LEASE_EXPIRED) and the
    # retry goes to the other worker, with a new fence.
    t0 = time.monotonic()
    job2: dict[str, Any] | None = None
    while job2 is None:
        assert time.monotonic() - t0 < LEASE_TTL_S + 20, "the expired lease was never reclaimed"
        jobs = fresh.poll(wait=5)
        job2 = jobs[0] if jobs else None
    assert job2["run_id"] == rid, job2
    assert job2["attempt"] == 2, job2
    assert job2["execution_seq"] > job1["execution_seq"] and job2["lease_token"] != job1["lease_token"], (job1, job2)
    assert [(s["step_id"], s["output"]) for s in job2["completed_steps"]] == [(f"{rid}:a:0", 1)], job2
    assert job2.get("step_sequence_base") == 1, job2

    before = (srv.request("GET", f"/api/v1/runs/{rid}").json(), srv.request("GET", f"/api/v1/runs/{rid}/steps").json())
    # The stale worker's result, checkpoint and ack are all refused.
    assert_stale(stale.put(job1, {"status": "completed", "output": {"by": "stale"},
                                  "steps": [step_row(rid, "b", "stale")], "step_offset": 1}))
    assert_stale(stale.put(job1, {"status": "progress", "steps": [step_row(rid, "b", "stale")], "step_offset": 1}))
    assert_stale(stale.put(job1, {"status": "failed", "steps": [], "step_offset": 1,
                                  "error": {"message": "x", "code": "ERROR", "retryable": False}}))
    assert_stale(stale.ack(job1))
    after = (srv.request("GET", f"/api/v1/runs/{rid}").json(), srv.request("GET", f"/api/v1/runs/{rid}/steps").json())
    assert after == before, f"a refused stale report changed the run:\n{json.dumps(before)}\n{json.dumps(after)}"
    assert after[0]["status"] == "running" and after[0]["output"] is None, after[0]

    # The worker holding the current fence finishes the run.
    assert fresh.ack(job2).status == 200
    r = fresh.put(job2, {"status": "completed", "output": {"by": "fresh"},
                         "steps": [step_row(rid, "b", "fresh")], "step_offset": 1})
    assert r.status == 200, r
    run = srv.request("GET", f"/api/v1/runs/{rid}").json()
    assert run["status"] == "completed" and run["output"] == {"by": "fresh"}, run
    steps = srv.request("GET", f"/api/v1/runs/{rid}/steps").json()["steps"]
    assert [(s["name"], s["output"]) for s in steps] == [("a", 1), ("b", "fresh")], steps
    assert_stale(stale.put(job1, {"status": "completed", "output": {"by": "stale"}, "steps": [], "step_offset": 2}))
    assert srv.request("GET", f"/api/v1/runs/{rid}").json()["output"] == {"by": "fresh"}
