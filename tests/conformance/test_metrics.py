"""`GET /metrics` during a workload (a real pull worker running three-step runs): Prometheus text with
the documented names and types — counters end in `_total`, durations are `_seconds` histograms with
buckets — labels are route patterns and statuses (never run ids), and the values move with the work."""

from __future__ import annotations

import re

from workerkit import WorkerKit

# Label values may hold braces (route patterns such as `/api/v1/runs/{id}`): quoted strings are skipped whole.
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)$')


def scrape(wk: WorkerKit) -> tuple[dict[str, str], dict[str, float]]:
    r = wk.server.request("GET", "/metrics", auth=False)
    assert r.status == 200 and r.content_type.startswith("text/plain"), r
    types: dict[str, str] = {}
    values: dict[str, float] = {}
    for line in r.body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            m = SAMPLE.match(line)
            assert m, f"not a Prometheus sample line: {line!r}"
            values[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return types, values


def total(values: dict[str, float], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    out = 0.0
    for key, v in values.items():
        base, _, rest = key.partition("{")
        if base == name and all(f'{k}="{val}"' in rest for k, val in labels.items()):
            out += v
    return out


def test_metrics_move_with_the_work(wk: WorkerKit) -> None:
    wk.worker("three")
    _, before = scrape(wk)
    runs = [wk.start_run("three", {"n": n}) for n in range(3)]
    for rid in runs:
        wk.wait_status(rid, "completed")
    types, after = scrape(wk)

    assert types.get("ironflow_http_request_duration_seconds") == "histogram", types
    assert types.get("ironflow_step_duration_seconds") == "histogram", types
    assert types.get("ironflow_runs_created_total") == "counter", types
    assert types.get("ironflow_steps_committed_total") == "counter", types
    counters = [n for n, t in types.items() if t == "counter"]
    assert counters and all(n.endswith("_total") for n in counters), counters

    assert total(after, "ironflow_runs_created_total") - total(before, "ironflow_runs_created_total") >= 3
    steps = (total(after, "ironflow_steps_committed_total", status="completed")
             - total(before, "ironflow_steps_committed_total", status="completed"))
    assert steps >= 9, f"three runs of three steps committed {steps} steps"
    timed = (total(after, "ironflow_step_duration_seconds_count")
             - total(before, "ironflow_step_duration_seconds_count"))
    assert timed >= 9, timed
    emits = (total(after, "ironflow_http_request_duration_seconds_count", route="/api/v1/events", code="200")
             - total(before, "ironflow_http_request_duration_seconds_count", route="/api/v1/events", code="200"))
    assert emits >= 3, emits
    assert any('le="+Inf"' in k for k in after if k.startswith("ironflow_http_request_duration_seconds_bucket")), (
        "durations are histograms with buckets")
    for rid in runs:
        assert not any(rid in k for k in after), f"a run id became a label: {rid}"


def test_dispatch_and_run_histograms_and_sampled_gauges(wk: WorkerKit) -> None:
    """Schedule-to-start and run duration are histograms by function; queue depth, workers and
    breakers are gauges read from the database (every few seconds), and an idle function reads 0."""
    wk.worker("three")
    fn = wk.fid("three")
    _, before = scrape(wk)
    runs = [wk.start_run("three", {"n": n}) for n in range(2)]
    for rid in runs:
        wk.wait_status(rid, "completed")

    def sampled() -> tuple[dict[str, str], dict[str, float]] | None:
        types, values = scrape(wk)
        # The gauge sampler has seen this test's function once it lists it (with 0 jobs ready).
        listed = any(f'function="{fn}"' in k for k in values if k.startswith("ironflow_queue_depth{"))
        return (types, values) if listed else None

    types, after = wk.until(sampled, "the gauges to list the function", deadline_s=20)
    assert types.get("ironflow_schedule_to_start_seconds") == "histogram", types
    assert types.get("ironflow_run_duration_seconds") == "histogram", types
    for gauge in ("ironflow_queue_depth", "ironflow_workers_connected", "ironflow_circuit_breakers_open"):
        assert types.get(gauge) == "gauge", (gauge, types)
    dispatched = (total(after, "ironflow_schedule_to_start_seconds_count", function=fn)
                  - total(before, "ironflow_schedule_to_start_seconds_count", function=fn))
    assert dispatched >= 2, dispatched
    ended = (total(after, "ironflow_run_duration_seconds_count", function=fn, status="completed")
             - total(before, "ironflow_run_duration_seconds_count", function=fn, status="completed"))
    assert ended == 2, ended
    assert total(after, "ironflow_queue_depth", function=fn) == 0, "a drained queue reads 0, not nothing"
    assert total(after, "ironflow_workers_connected") >= 1
