"""Pull worker (real ironflow-py `Worker` processes): cancelling runs (parked and running) and per-key
concurrency limits. Blocking step bodies wait on gate files the test opens, so no test sleeps to synchronise."""

from __future__ import annotations

import time

from workerkit import WorkerKit, step_by_name


def cancel(wk: WorkerKit, rid: str) -> dict:
    r = wk.server.request("POST", f"/api/v1/runs/{rid}/cancel", json_body={"reason": "conformance"})
    assert r.status == 200, r
    return r.json()


def test_cancel_while_sleeping(wk: WorkerKit) -> None:
    wk.worker("cancel")
    rid = wk.start_run("long", {})
    wk.wait_status(rid, "waiting")
    nap = wk.wait_step(rid, "long-nap", "sleeping")
    assert nap["type"] == "sleep" and nap["step_id"] == f"{rid}:long-nap:0", nap

    t0 = time.monotonic()
    body = cancel(wk, rid)
    assert body["status"] == "cancelled" and body["id"] == rid, body
    run = wk.run(rid)
    assert time.monotonic() - t0 < 2.0
    assert run["status"] == "cancelled" and run["ended_at"] is not None and run["output"] is None, run
    assert wk.kinds(rid)[-1] == "run.cancelled"

    # The same worker keeps polling: a new run completes on it, and the cancelled one was never handed out again.
    quick = wk.start_run("quick", {"n": 5})
    assert wk.wait_status(quick, "completed")["output"] == {"quick": 5}
    kinds = wk.kinds(rid)
    assert kinds.count("run.dispatched") == 1 and kinds[-1] == "run.cancelled", kinds
    assert wk.whats(rid) == ["s1"]
    assert wk.run(rid)["status"] == "cancelled"
    assert step_by_name(wk.steps(rid))["long-nap"]["status"] != "completed", wk.steps(rid)


def test_cancel_while_running_fences_out_the_worker(wk: WorkerKit) -> None:
    worker = wk.worker("cancel")
    rid = wk.start_run("busy", {"gate": "busy"})
    wk.wait_step(rid, "s1")
    wk.wait_effect("blocked:blocked", rid)  # the handler is inside the blocked step body

    body = cancel(wk, rid)
    assert body["status"] == "cancelled", body
    assert wk.run(rid)["status"] == "cancelled"

    # The step finishes; its checkpoint (or the final report) is refused with 409 STALE_EXECUTION and the SDK
    # drops the job. Nothing it sends after the cancel may be recorded.
    wk.open_gate("busy")
    wk.until(lambda: "fenced out on checkpoint" in worker.logs() or "was superseded" in worker.logs(),
             "the worker to be fenced out (409 STALE_EXECUTION on its checkpoint or report)",
             state=lambda: wk.whats(rid))
    run = wk.run(rid)
    assert run["status"] == "cancelled" and run["output"] is None, run
    assert [s["name"] for s in wk.steps(rid)] == ["s1"], wk.steps(rid)
    kinds = wk.kinds(rid)
    assert kinds[-1] == "run.cancelled" and "run.completed" not in kinds, kinds
    assert kinds.count("step.completed") == 1, kinds

    quick = wk.start_run("quick", {"n": 1})
    wk.wait_status(quick, "completed")
    assert wk.kinds(rid).count("run.dispatched") == 1


def test_concurrency_limit_serializes_one_key(wk: WorkerKit) -> None:
    wk.worker("serial")

    def start(name: str, key: str) -> str:
        return wk.start_run("serial", {"k": key, "name": name, "gate": name})

    a1 = start("A1", "a")
    wk.wait_effect("work:A1:blocked", a1)
    assert wk.run(a1)["status"] == "running"

    a2 = start("A2", "a")
    a3 = start("A3", "a")
    b1 = start("B1", "b")
    for rid in (a2, a3):
        wk.wait_status(rid, "waiting_for_capacity")
    # Another key is not held up: B1 starts while A1 holds key a's only slot.
    wk.wait_effect("work:B1:blocked", b1)
    assert wk.run(b1)["status"] == "running"
    assert wk.run(a1)["status"] == "running"
    for rid in (a2, a3):
        assert wk.run(rid)["status"] == "waiting_for_capacity"

    wk.open_gate("B1")
    assert wk.wait_status(b1, "completed")["output"] == {"name": "B1"}
    for rid in (a2, a3):
        assert wk.run(rid)["status"] == "waiting_for_capacity", "freeing key b's slot must not start key a runs"

    # A1 ends: A2 (the older waiter) gets the slot, A3 keeps waiting.
    wk.open_gate("A1")
    assert wk.wait_status(a1, "completed")["output"] == {"name": "A1"}
    wk.wait_effect("work:A2:blocked", a2)
    assert wk.run(a2)["status"] == "running"
    assert wk.run(a3)["status"] == "waiting_for_capacity"

    wk.open_gate("A2")
    wk.wait_status(a2, "completed")
    wk.wait_effect("work:A3:blocked", a3)
    wk.open_gate("A3")
    assert wk.wait_status(a3, "completed")["output"] == {"name": "A3"}

    # Key a ran strictly one at a time, in emit order; B1 overlapped A1.
    t = {e["what"]: e["t"] for e in wk.effects()}
    assert t["work:A1"] < t["work:A2:blocked"] < t["work:A2"] < t["work:A3:blocked"] < t["work:A3"], t
    assert t["work:A1:blocked"] < t["work:B1:blocked"] < t["work:B1"] < t["work:A1"], t
    assert wk.whats(a1) == ["work:A1:blocked", "work:A1"]
