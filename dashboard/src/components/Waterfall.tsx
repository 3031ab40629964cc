//! A run's steps as a waterfall: queue delay (light), execution (solid), sleeps and waits
//! (striped), retries counted on the bar.

import type { Waterfall as Model, Span } from "../lib/waterfall";
import { duration } from "../lib/format";
import { StatusBadge } from "./StatusBadge";

const BAR: Record<string, string> = {
  completed: "bg-emerald-500",
  failed: "bg-rose-500",
  running: "bg-sky-500",
  sleeping: "bg-amber-400",
  waiting: "bg-amber-400",
};

function pct(ms: number, total: number): string {
  return `${Math.min(100, Math.max(0, (ms / total) * 100)).toFixed(3)}%`;
}

function Row({ span, total, selected, onSelect }: { span: Span; total: number; selected: boolean; onSelect: () => void }) {
  const colour = BAR[span.status] ?? "bg-slate-400";
  const pattern = span.kind === "sleep" || span.kind === "wait" ? "bg-[repeating-linear-gradient(45deg,transparent,transparent_4px,rgba(255,255,255,.4)_4px,rgba(255,255,255,.4)_8px)]" : "";
  return (
    <li>
      <button
        type="button"
        data-step={span.stepId}
        aria-pressed={selected}
        onClick={onSelect}
        className={`grid w-full grid-cols-[14rem_1fr_6rem] items-center gap-2 px-1 py-0.5 text-left text-xs hover:bg-slate-100 ${selected ? "bg-indigo-50" : ""}`}
      >
        <span className="truncate" title={span.name}>
          {span.name} <span className="text-slate-400">{span.kind !== "step" ? span.kind : ""}</span>
          {span.retries > 0 ? <span className="ml-1 text-rose-600">↻{span.retries}</span> : null}
        </span>
        <span className="relative h-3 rounded bg-slate-100">
          <span className="absolute h-3 bg-slate-300" style={{ left: pct(span.queuedAt, total), width: pct(span.start - span.queuedAt, total) }} title={`queued ${duration(span.start - span.queuedAt)}`} />
          <span className={`absolute h-3 min-w-[2px] rounded ${colour} ${pattern}`} style={{ left: pct(span.start, total), width: pct(span.end - span.start, total) }} title={duration(span.end - span.start)} />
        </span>
        <span className="flex justify-between gap-1"><StatusBadge status={span.status} /><span className="text-slate-500">{duration(span.end - span.start)}</span></span>
      </button>
    </li>
  );
}

export function Waterfall({ model, selected, onSelect }: { model: Model; selected: string | null; onSelect: (stepId: string) => void }) {
  return (
    <div aria-label="Waterfall">
      <div className="mb-1 flex justify-between text-xs text-slate-500"><span>0</span><span>{duration(model.total)}</span></div>
      <ol className="divide-y divide-slate-100">
        {model.spans.map((s) => <Row key={s.stepId} span={s} total={model.total} selected={selected === s.stepId} onSelect={() => onSelect(s.stepId)} />)}
      </ol>
    </div>
  );
}
