import { describe, expect, it } from "vitest";
import { runsPerMinute } from "./buckets";
import type { Run } from "../api/types";

const now = Date.parse("2026-12-01T10:05:30Z");
const r = (created: string, ended: string | null, status: string) => ({ created_at: created, ended_at: ended, status }) as Run;

describe("runsPerMinute", () => {
  it("counts starts, completions and failures in their minute", () => {
    const b = runsPerMinute([
      r("2026-12-01T10:05:01Z", "2026-12-01T10:05:10Z", "completed"),
      r("2026-12-01T10:04:59Z", "2026-12-01T10:05:20Z", "failed"),
      r("2026-12-01T10:04:00Z", null, "running"),
      r("2026-12-01T09:00:00Z", "2026-12-01T09:00:01Z", "completed"),
    ], now, 3);
    expect(b.map((x) => [x.started, x.completed, x.failed])).toEqual([[0, 0, 0], [2, 0, 0], [1, 1, 1]]);
  });
});
