//! A run's, step's or breaker's status as a coloured badge.

const COLOURS: Record<string, string> = {
  completed: "bg-emerald-100 text-emerald-800",
  active: "bg-emerald-100 text-emerald-800",
  closed: "bg-emerald-100 text-emerald-800",
  running: "bg-sky-100 text-sky-800",
  pending: "bg-slate-200 text-slate-700",
  waiting: "bg-amber-100 text-amber-800",
  sleeping: "bg-amber-100 text-amber-800",
  paused: "bg-violet-100 text-violet-800",
  half_open: "bg-amber-100 text-amber-800",
  failed: "bg-rose-100 text-rose-800",
  open: "bg-rose-100 text-rose-800",
  cancelled: "bg-slate-300 text-slate-700",
};

export function StatusBadge({ status }: { status: string }) {
  const colour = COLOURS[status.toLowerCase()] ?? "bg-slate-100 text-slate-700";
  return <span data-status={status} className={`inline-block rounded px-2 py-0.5 text-xs font-medium ${colour}`}>{status}</span>;
}
