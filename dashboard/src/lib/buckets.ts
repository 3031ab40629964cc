//! Runs per minute: started, completed and failed counts in one-minute buckets.

import type { Run } from "../api/types";

export interface MinuteBucket { minute: number; started: number; completed: number; failed: number }

export function runsPerMinute(runs: readonly Run[], now: number, minutes: number): MinuteBucket[] {
  const end = Math.floor(now / 60_000);
  const buckets: MinuteBucket[] = [];
  for (let m = end - minutes + 1; m <= end; m++) buckets.push({ minute: m * 60_000, started: 0, completed: 0, failed: 0 });
  const slot = (iso: string | null): MinuteBucket | undefined => {
    if (!iso) return undefined;
    const m = Math.floor(Date.parse(iso) / 60_000);
    return buckets[m - (end - minutes + 1)];
  };
  for (const r of runs) {
    const s = slot(r.created_at);
    if (s) s.started++;
    const e = slot(r.ended_at);
    if (e && r.status === "completed") e.completed++;
    if (e && r.status === "failed") e.failed++;
  }
  return buckets;
}
