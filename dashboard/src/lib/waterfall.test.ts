import { describe, expect, it } from "vitest";
import { buildWaterfall } from "./waterfall";
import type { Run, Step } from "../api/types";

const t0 = Date.parse("2026-12-01T10:00:00.000Z");
const iso = (ms: number) => new Date(t0 + ms).toISOString();

function run(over: Partial<Run> = {}): Run {
  return {
    id: "r1", function_id: "f", function_version: 1, event_id: null, event_name: null, status: "completed",
    input: {}, output: null, error: null, attempt: 1, max_attempts: 3, parent_run_id: null,
    created_at: iso(0), updated_at: iso(0), started_at: iso(10), ended_at: iso(1000),
    pause_requested: false, pause_reason: null, resume_from_step: null, ...over,
  };
}

function step(seq: number, start: number | null, end: number | null, over: Partial<Step> = {}): Step {
  return {
    run_id: "r1", step_id: `s${seq}`, name: `step ${seq}`, type: "run", sequence: seq, status: end === null ? "running" : "completed",
    output: null, error: null, attempt: 1, started_at: start === null ? null : iso(start), ended_at: end === null ? null : iso(end),
    original_output: null, patched_at: null, patched_by: null, injected: false, ...over,
  };
}

describe("buildWaterfall", () => {
  it("places steps on the run's axis with the queue delay before each", () => {
    const w = buildWaterfall(run(), [step(2, 300, 600), step(1, 50, 200)], t0 + 5000);
    expect(w.total).toBe(1000);
    expect(w.spans.map((s) => s.stepId)).toEqual(["s1", "s2"]);
    expect(w.spans[0]).toMatchObject({ queuedAt: 0, start: 50, end: 200, open: false });
    expect(w.spans[1]).toMatchObject({ queuedAt: 200, start: 300, end: 600 });
  });

  it("draws an unfinished step up to now and counts retries", () => {
    const w = buildWaterfall(run({ status: "running", ended_at: null }), [step(1, 100, null, { attempt: 3 })], t0 + 2500);
    expect(w.spans[0]).toMatchObject({ end: 2500, open: true, retries: 2 });
    expect(w.total).toBe(2500);
  });

  it("marks sleeps and waits as their own kind", () => {
    const w = buildWaterfall(run(), [step(1, 0, 500, { type: "sleep" }), step(2, 500, 900, { type: "wait_for_event" })], t0);
    expect(w.spans.map((s) => s.kind)).toEqual(["sleep", "wait"]);
  });

  it("never has a zero-length axis", () => {
    expect(buildWaterfall(run({ ended_at: iso(0) }), [], t0).total).toBe(1);
  });
});
