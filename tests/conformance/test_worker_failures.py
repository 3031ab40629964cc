"""Pull worker (real ironflow-py `Worker` processes): retries with backoff, non-retryable failures and
compensations (run by the SDK, newest first, on a terminal failure; reported as `compensate:<step>` rows)."""

from __future__ import annotations

from ifconf import parse_ts
from workerkit import WorkerKit, error_code, step_by_name

# A retry may be dispatched this much later than its backoff delay and still count as on time.
TIMER_SLACK_S = 2.5


def test_retry_twice_then_succeed(wk: WorkerKit) -> None:
    wk.worker("flaky")
    rid = wk.start_run("flaky", {})
    run = wk.wait_status(rid, "completed")

    assert run["output"] == {"succeeded_on": 3}, run
    assert run["attempt"] == 3 and run["max_attempts"] == 3, run
    assert run["error"] is None, run

    flaky = [e for e in wk.effects(rid) if e["what"] == "flaky"]
    assert [e["attempt"] for e in flaky] == [1, 2, 3], flaky
    assert [e["attempt"] for e in wk.effects(rid) if e["what"] == "prep"] == [1], (
        "a step completed on attempt 1 must be memoized on the retries")

    kinds = wk.kinds(rid)
    assert kinds.count("run.retrying") == 2, kinds
    assert kinds.count("step.failed") == 2, kinds
    assert kinds.count("run.dispatched") == 3 and kinds[-1] == "run.completed", kinds
    assert "run.failed" not in kinds, kinds

    steps = step_by_name(wk.steps(rid))
    assert steps["prep"]["status"] == "completed" and steps["prep"]["output"] == "ready", steps
    assert steps["flaky"]["status"] == "completed" and steps["flaky"]["output"] == 3, steps

    # Exponential backoff: initial_delay 100 ms, factor 2. Each retry is dispatched no earlier than its delay.
    history = wk.history(rid)
    retries = [(i, e) for i, e in enumerate(history) if e["kind"] == "run.retrying"]
    assert [e["payload"]["delay_ms"] for _, e in retries] == [100, 200], [e["payload"] for _, e in retries]
    assert [(e["payload"]["failed_attempt"], e["payload"]["next_attempt"]) for _, e in retries] == [(1, 2), (2, 3)]
    waits = []
    for i, retry in retries:
        nxt = next(e for e in history[i + 1:] if e["kind"] == "run.dispatched")
        waited = (parse_ts(nxt["recorded_at"]) - parse_ts(retry["recorded_at"])).total_seconds()
        assert waited >= retry["payload"]["delay_ms"] / 1000 - 0.001, (retry, nxt)
        waits.append(waited)
    assert all(w < d / 1000 + TIMER_SLACK_S for w, d in zip(waits, (100, 200))), (
        f"retries with 100 ms / 200 ms backoff were dispatched only after {[round(w, 2) for w in waits]} s")


def test_non_retryable_failure_runs_compensations_newest_first(wk: WorkerKit) -> None:
    wk.worker("saga")
    rid = wk.start_run("saga", {})
    run = wk.wait_status(rid, "failed")

    assert error_code(run) == "CARD_DECLINED", run
    assert run["error"].get("retryable") is False and "card declined" in run["error"]["message"], run
    assert run["attempt"] == 1 and run["output"] is None, run
    assert wk.whats(rid) == ["reserve", "charge", "ship", "undo:ship", "undo:charge", "undo:reserve"]

    steps = wk.steps(rid)
    comp = [s for s in steps if s["type"] == "compensate"]
    assert [(s["name"], s["status"], s["step_id"]) for s in comp] == [
        ("compensate:ship", "completed", f"{rid}:compensate:ship:0"),
        ("compensate:charge", "completed", f"{rid}:compensate:charge:0"),
        ("compensate:reserve", "completed", f"{rid}:compensate:reserve:0"),
    ], steps
    assert [s["name"] for s in steps if s["type"] != "compensate"] == ["reserve", "charge", "ship"], steps

    kinds = wk.kinds(rid)
    assert "run.retrying" not in kinds and kinds.count("run.dispatched") == 1, kinds
    assert kinds[-1] == "run.failed", kinds


def test_exhausted_retries_run_compensations_once_on_last_attempt(wk: WorkerKit) -> None:
    wk.worker("saga")
    rid = wk.start_run("saga-exhaust", {})
    run = wk.wait_status(rid, "failed")

    assert run["attempt"] == 2 and run["max_attempts"] == 2, run
    assert error_code(run) == "ERROR" and "still broken on attempt 2" in run["error"]["message"], run
    effects = [(e["what"], e["attempt"]) for e in wk.effects(rid)]
    assert effects == [
        ("reserve", 1), ("charge", 1), ("ship", 1), ("fail", 1),
        ("fail", 2), ("undo:ship", 2), ("undo:charge", 2), ("undo:reserve", 2),
    ], effects

    comp = [s["name"] for s in wk.steps(rid) if s["type"] == "compensate"]
    assert comp == ["compensate:ship", "compensate:charge", "compensate:reserve"], comp
    kinds = wk.kinds(rid)
    assert kinds.count("run.retrying") == 1 and kinds[-1] == "run.failed", kinds
