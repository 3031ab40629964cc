"""ironflow-py's `StreamingWorker` (Connect bidirectional streaming on HTTP/2, `WorkerService/Connect`)
as real worker processes, unchanged: the pull worker's durable-step scenarios run again over the stream
(steps, a durable sleep, wait_for_event, invoke, retries with memoized steps, compensations), a worker
SIGKILLed mid-step loses no committed step, and a cancelled run is taken from the worker that holds it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ifconf import Server
from test_worker_failures import test_non_retryable_failure_runs_compensations_newest_first as _compensations
from test_worker_failures import test_retry_twice_then_succeed as _retries
from test_worker_steps import test_invoke_child_output_and_invoke_async as _invoke
from test_worker_steps import test_sleep_parks_and_resumes as _sleep
from test_worker_steps import test_three_steps_complete as _three_steps
from test_worker_steps import test_wait_for_event_matching_event_resumes as _wait
from workerkit import LEASE_TTL_S, WorkerKit


@pytest.fixture
def swk(lease_server: Server, tmp_path: Path) -> Iterator[WorkerKit]:
    """A worker kit whose workers are `StreamingWorker`s; all SIGKILLed after the test."""
    kit = WorkerKit(lease_server, tmp_path, transport="stream")
    try:
        yield kit
    finally:
        kit.close()


def test_stream_worker_registers_over_the_stream(swk: WorkerKit) -> None:
    worker = swk.worker("three")
    r = swk.server.request("GET", "/api/v1/workers")
    listed = next(w for w in r.json()["workers"] if w["id"] == worker.worker_id)
    assert listed["transport"] == "stream", listed
    assert swk.fid("three") in listed["function_ids"], listed
    info = swk.server.connect_json("Info", {})
    assert info.status == 200, info
    assert info.json().get("connectedWorkers", 0) >= 1, info.json()


def test_stream_three_steps_complete(swk: WorkerKit) -> None:
    _three_steps(swk)


def test_stream_sleep_parks_and_resumes(swk: WorkerKit) -> None:
    _sleep(swk)


def test_stream_wait_for_event_resumes(swk: WorkerKit) -> None:
    _wait(swk)


def test_stream_invoke(swk: WorkerKit) -> None:
    _invoke(swk)


def test_stream_retries_skip_completed_steps(swk: WorkerKit) -> None:
    _retries(swk)


def test_stream_compensations(swk: WorkerKit) -> None:
    _compensations(swk)


def test_stream_multi_step_with_sleep_and_retry(swk: WorkerKit) -> None:
    """One worker serves a run that sleeps and one that fails twice before it succeeds, at the same time."""
    swk.worker("nap", "flaky")
    napping = swk.start_run("nap", {"sleep": 1})
    flaky = swk.start_run("flaky", {})
    assert swk.wait_status(flaky, "completed")["output"] == {"succeeded_on": 3}
    slept = swk.wait_status(napping, "completed")
    assert slept["output"]["slept"] >= 1.0, slept
    assert [e["attempt"] for e in swk.effects(flaky) if e["what"] == "prep"] == [1]
    assert swk.whats(napping) == ["before", "after"]
    assert swk.kinds(flaky).count("run.retrying") == 2


def test_stream_worker_killed_mid_step_loses_no_committed_step(swk: WorkerKit) -> None:
    first = swk.worker("three", name="doomed")
    rid = swk.start_run("three", {"n": 1, "gate": "s3"})
    swk.wait_step(rid, "s2")                    # steps 1 and 2 are committed on the server
    swk.wait_effect("s3:blocked", rid)          # and the worker is inside step 3
    first.kill()
    t_kill = time.monotonic()

    swk.open_gate("s3")
    second = swk.worker("three", name="rescuer")
    run = swk.wait_status(rid, "completed", deadline_s=LEASE_TTL_S + 20)
    assert run["output"] == {"a": 2, "b": 20, "c": 27}, run
    effects = [(e["what"], e["pid"]) for e in swk.effects(rid) if not e["what"].endswith(":blocked")]
    assert effects == [("s1", first.proc.pid), ("s2", first.proc.pid), ("s3", second.proc.pid)], effects
    steps = swk.steps(rid)
    assert [(s["name"], s["status"], s["output"]) for s in steps] == [
        ("s1", "completed", 2), ("s2", "completed", 20), ("s3", "completed", 27)], steps
    dispatches = [e["payload"] for e in swk.history(rid) if e["kind"] == "run.dispatched"]
    assert [d["worker_id"] for d in dispatches] == [first.worker_id, second.worker_id], dispatches
    # The broken stream gave the job back at once (no attempt used); it did not wait for the lease.
    assert run["attempt"] == 1, run
    assert time.monotonic() - t_kill < LEASE_TTL_S + 20


def test_stream_cancel_while_running_takes_the_job_away(swk: WorkerKit) -> None:
    worker = swk.worker("cancel")
    rid = swk.start_run("busy", {"gate": "busy"})
    swk.wait_step(rid, "s1")
    swk.wait_effect("blocked:blocked", rid)
    r = swk.server.request("POST", f"/api/v1/runs/{rid}/cancel", json_body={"reason": "test"})
    assert r.status == 200, r
    swk.until(lambda: "server canceled job" in worker.logs(), "the stream's cancel to reach the worker",
              state=lambda: worker.logs(600))
    swk.open_gate("busy")
    quick = swk.start_run("quick", {"n": 1})
    swk.wait_status(quick, "completed")
    run = swk.run(rid)
    assert run["status"] == "cancelled" and run["output"] is None, run
    assert [s["name"] for s in swk.steps(rid)] == ["s1"], swk.steps(rid)
    kinds = swk.kinds(rid)
    assert kinds[-1] == "run.cancelled" and kinds.count("run.dispatched") == 1, kinds
    assert worker.alive()
