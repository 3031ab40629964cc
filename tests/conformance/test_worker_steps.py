"""Pull worker (real ironflow-py `Worker` processes): durable steps, sleep, wait_for_event and invoke.

Every test starts its own worker process (tests/conformance/worker_app.py) with a unique function prefix
against the short-lease server of its backend, and reads the server's view through the REST runs API.
Step side effects are counted from the worker's effects file.
"""

from __future__ import annotations

import time

from workerkit import WorkerKit, error_code, step_by_name

# A timer (sleep end, wait timeout) may fire this late and still count as "when due".
TIMER_SLACK_S = 2.5


def test_three_steps_complete(wk: WorkerKit) -> None:
    wk.worker("three")
    rid = wk.start_run("three", {"n": 4})
    run = wk.wait_status(rid, "completed")

    assert run["output"] == {"a": 5, "b": 50, "c": 57}, run
    assert run["error"] is None and run["attempt"] == 1, run
    assert run["ended_at"] is not None, run

    steps = wk.steps(rid)
    assert [(s["step_id"], s["name"], s["type"], s["status"], s["output"]) for s in steps] == [
        (f"{rid}:s1:0", "s1", "invoke", "completed", 5),
        (f"{rid}:s2:0", "s2", "invoke", "completed", 50),
        (f"{rid}:s3:0", "s3", "invoke", "completed", 57),
    ], steps

    history = wk.history(rid)
    kinds = [e["kind"] for e in history]
    assert kinds[0] == "run.created" and kinds[-1] == "run.completed", kinds
    assert kinds.count("step.completed") == 3 and kinds.count("run.completed") == 1, kinds
    assert "step.failed" not in kinds and "run.retrying" not in kinds, kinds
    seqs = [e["seq"] for e in history]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    done = [e["payload"] for e in history if e["kind"] == "step.completed"]
    assert [(p["name"], p["output"]) for p in done] == [("s1", 5), ("s2", 50), ("s3", 57)], done
    assert history[-1]["payload"]["output"] == {"a": 5, "b": 50, "c": 57}, history[-1]

    assert wk.whats(rid) == ["s1", "s2", "s3"]


def test_sleep_parks_and_resumes(wk: WorkerKit) -> None:
    wk.worker("nap")
    t0 = time.monotonic()
    rid = wk.start_run("nap", {"sleep": 1})
    parked = wk.wait_status(rid, "waiting", "completed")
    assert parked["status"] == "waiting", f"a 1 s sleep should park the run first: {parked}"
    run = wk.wait_status(rid, "completed")
    took = time.monotonic() - t0

    steps = step_by_name(wk.steps(rid))
    assert list(steps) == ["before", "nap", "after"], steps
    assert steps["nap"]["type"] == "sleep" and steps["nap"]["status"] == "completed", steps["nap"]
    before, after = (e for e in wk.effects(rid) if e["what"] in ("before", "after"))
    slept = after["t"] - before["t"]
    assert run["output"]["slept"] >= 1.0 and slept >= 1.0 and took >= 1.0, (run, slept, took)
    assert wk.whats(rid) == ["before", "after"], "the step before the sleep must not run again on resume"

    kinds = wk.kinds(rid)
    assert kinds.count("run.yielded") == 1 and kinds.count("run.dispatched") == 2, kinds
    assert kinds[-1] == "run.completed", kinds
    timeline = [(e["kind"], e["recorded_at"], e["payload"].get("until")) for e in wk.history(rid)]
    assert slept < 1.0 + TIMER_SLACK_S, f"a 1 s sleep resumed only after {slept:.2f} s; history: {timeline}"


def test_wait_for_event_matching_event_resumes(wk: WorkerKit) -> None:
    wk.worker("wait")
    rid = wk.start_run("wait", {"id": "order-7"})
    wk.wait_status(rid, "waiting")
    waiting = wk.wait_step(rid, "reply", "waiting")
    assert waiting["type"] == "wait_for_event" and waiting["step_id"] == f"{rid}:reply:0", waiting

    miss = wk.emit("reply", {"id": "order-8", "v": 1})
    assert miss["run_ids"] == [], miss
    assert wk.run(rid)["status"] == "waiting", "a non-matching event must not resume the wait"

    hit = wk.emit("reply", {"id": "order-7", "v": 2})
    run = wk.wait_status(rid, "completed")
    assert run["output"] == {"reply": {"id": "order-7", "v": 2}, "reply_name": wk.event("reply"),
                             "reply_id": hit["event_id"]}, run
    steps = step_by_name(wk.steps(rid))
    assert list(steps) == ["first", "reply", "after"], steps
    assert steps["reply"]["status"] == "completed" and steps["reply"]["type"] == "wait_for_event", steps
    assert wk.whats(rid) == ["first", "after"]
    kinds = wk.kinds(rid)
    assert kinds.count("run.dispatched") == 2 and kinds[-1] == "run.completed", kinds


def test_wait_for_event_timeout_fails_run(wk: WorkerKit) -> None:
    wk.worker("wait")
    t0 = time.monotonic()
    rid = wk.start_run("wait", {"id": "never", "timeout": "1s"})
    wk.wait_step(rid, "reply", "waiting")
    run = wk.wait_status(rid, "failed")
    took = time.monotonic() - t0

    assert error_code(run) == "WAIT_TIMEOUT", run
    assert run["error"].get("retryable") is False, run
    assert run["output"] is None and run["attempt"] == 1, run
    assert took >= 1.0, took
    assert wk.whats(rid) == ["first"], "nothing after the wait may run"
    steps = step_by_name(wk.steps(rid))
    assert steps["reply"]["status"] != "completed", steps["reply"]
    kinds = wk.kinds(rid)
    assert kinds[-1] == "run.failed" and "run.retrying" not in kinds, kinds
    assert kinds.count("run.dispatched") == 1, f"a timed-out wait must not be re-dispatched: {kinds}"
    assert took < 1.0 + TIMER_SLACK_S, f"a 1 s wait timed out only after {took:.2f} s (run {run})"


def test_invoke_child_output_and_invoke_async(wk: WorkerKit) -> None:
    wk.worker("invoke")
    rid = wk.start_run("parent", {"x": 21})
    run = wk.wait_status(rid, "completed")
    assert run["output"]["child"] == {"y": 42}, run
    async_id = run["output"]["async_run_id"]
    assert isinstance(async_id, str) and async_id, run

    children = wk.runs_of("child")
    assert len(children) == 2, children
    sync_child = next(c for c in children if c["id"] != async_id)
    assert sync_child["status"] == "completed" and sync_child["output"] == {"y": 42}, sync_child
    assert sync_child["parent_run_id"] == rid, sync_child
    async_child = wk.wait_status(async_id, "completed")
    assert async_child["output"] == {"y": 200} and async_child["function_id"] == wk.fid("child"), async_child

    steps = wk.steps(rid)
    child_fid = wk.fid("child")
    invoked = [s for s in steps if s["step_id"] == f"{rid}:{child_fid}:0"]
    assert len(invoked) == 1 and invoked[0]["status"] == "completed", steps
    assert invoked[0]["type"] == "invoke_function" and invoked[0]["output"] == {"y": 42}, invoked
    assert [s["name"] for s in steps][-1] == "done", steps
    assert [e["what"] for e in wk.effects(rid)] == ["parent-done"]
    assert [e["what"] for e in wk.effects(sync_child["id"])] == ["child"]


def test_invoke_failing_child_raises_invoke_error(wk: WorkerKit) -> None:
    wk.worker("invoke")
    caught = wk.start_run("parent-catch", {})
    escaped = wk.start_run("parent-fail", {})

    run = wk.wait_status(caught, "completed")
    assert run["output"]["caught"] == "INVOKE_FAILED", run
    assert "child boom" in run["output"]["cause"], run
    (note,) = [e for e in wk.effects(caught) if e["what"] == "caught"]

    failed = wk.wait_status(escaped, "failed")
    assert error_code(failed) == "INVOKE_FAILED", failed
    assert failed["error"].get("retryable") is False and failed["attempt"] == 1, failed
    assert "child boom" in failed["error"]["message"], failed
    kinds = wk.kinds(escaped)
    assert "run.retrying" not in kinds and kinds[-1] == "run.failed", kinds
    assert "unreachable" not in wk.whats(escaped)

    bad = wk.runs_of("child-bad")
    assert len(bad) == 2 and {c["parent_run_id"] for c in bad} == {caught, escaped}, bad
    for child in bad:
        assert child["status"] == "failed" and error_code(child) == "CHILD_BOOM", child
        assert child["attempt"] == 1, f"a NonRetryableError must not be retried: {child}"
    if note.get("child_run_id"):
        assert note["child_run_id"] in {c["id"] for c in bad}, note
