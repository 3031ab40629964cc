//! A run's waterfall: each step as a span on the run's time axis, with the queue delay before
//! it (from the previous step's end, or the run's creation, to its start), its retries, and
//! sleeps and waits drawn as their own kind of span.

import type { Run, Step } from "../api/types";

export type SpanKind = "step" | "sleep" | "wait" | "invoke";

export interface Span {
  stepId: string;
  name: string;
  kind: SpanKind;
  status: string;
  /** Milliseconds from the run's creation. */
  queuedAt: number;
  start: number;
  end: number;
  /** End is "now": the step has not finished. */
  open: boolean;
  retries: number;
}

export interface Waterfall {
  spans: Span[];
  /** The axis length in milliseconds (at least 1). */
  total: number;
}

function kindOf(type: string): SpanKind {
  if (type === "sleep") return "sleep";
  if (type === "wait_for_event" || type === "wait") return "wait";
  if (type === "invoke_function") return "invoke";
  return "step";
}

function at(iso: string | null | undefined): number | null {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

export function buildWaterfall(run: Run, steps: readonly Step[], now: number): Waterfall {
  const origin = at(run.created_at) ?? now;
  const runEnd = at(run.ended_at);
  const ordered = [...steps].sort((a, b) => a.sequence - b.sequence);
  let previousEnd = origin;
  const spans: Span[] = [];
  for (const s of ordered) {
    const start = at(s.started_at) ?? at(s.ended_at) ?? previousEnd;
    const endRaw = at(s.ended_at);
    const open = endRaw === null;
    const end = endRaw ?? runEnd ?? now;
    spans.push({
      stepId: s.step_id,
      name: s.name || s.step_id,
      kind: kindOf(s.type),
      status: s.status,
      queuedAt: Math.min(previousEnd, start) - origin,
      start: start - origin,
      end: Math.max(end, start) - origin,
      open,
      retries: Math.max(0, s.attempt - 1),
    });
    previousEnd = Math.max(previousEnd, end);
  }
  const last = Math.max(runEnd ?? (spans.some((s) => s.open) || ordered.length === 0 ? now : previousEnd), previousEnd);
  return { spans, total: Math.max(1, last - origin) };
}
