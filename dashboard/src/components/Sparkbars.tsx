//! A small bar chart of per-minute counts.

import type { MinuteBucket } from "../lib/buckets";

export function Sparkbars({ buckets, field, colour, label }: { buckets: MinuteBucket[]; field: "started" | "completed" | "failed"; colour: string; label: string }) {
  const max = Math.max(1, ...buckets.map((b) => b[field]));
  const total = buckets.reduce((n, b) => n + b[field], 0);
  return (
    <figure className="rounded border border-slate-200 bg-white p-3">
      <figcaption className="text-xs text-slate-500">{label} · last {buckets.length} min, per minute</figcaption>
      <div className="text-2xl font-semibold" data-testid={`total-${field}`}>{total}</div>
      <div className="mt-1 flex h-10 items-end gap-px" aria-hidden>
        {buckets.map((b) => <span key={b.minute} className={`flex-1 ${colour}`} style={{ height: `${(b[field] / max) * 100}%` }} title={`${new Date(b.minute).toISOString().slice(11, 16)}: ${b[field]}`} />)}
      </div>
    </figure>
  );
}
