//! Overview: runs started / completed / failed per minute over the last half hour, queue depth
//! and schedule-to-start latency, workers connected, open circuit breakers.

import { useClient, useLive } from "../api/context";
import type { RunsPage } from "../api/types";
import { useResource } from "../lib/resource";
import { runsPerMinute } from "../lib/buckets";
import { duration } from "../lib/format";
import { Sparkbars } from "../components/Sparkbars";
import { Link } from "../components/Link";
import { ErrorState, Loading } from "../components/States";

const MINUTES = 30;

interface OverviewAnswer {
  queue: { function_id: string; ready: number; scheduled: number }[];
  schedule_to_start_ms: { p50: number | null; p99: number | null; samples: number };
  workers: number;
  open_breakers: { key: string; function_id: string; state: string }[];
}

function Tile({ label, value, testId, children }: { label: string; value: string | number; testId: string; children?: React.ReactNode }) {
  return (
    <div className="rounded border border-slate-200 bg-white p-3">
      <div className="text-xs text-slate-500">{label}</div>
      <div className="text-2xl font-semibold" data-testid={testId}>{value}</div>
      {children}
    </div>
  );
}

export function OverviewPage() {
  const client = useClient();
  const runs = useResource(
    async () => {
      const now = Date.now();
      const page = await client.get<RunsPage>("/api/v1/runs", { since: new Date(now - MINUTES * 60_000).toISOString(), limit: 1000 });
      return { ...page, buckets: runsPerMinute(page.runs, now, MINUTES) };
    },
    [client],
  );
  const overview = useResource(() => client.get<OverviewAnswer>("/api/v1/overview"), [client]);
  useLive("system.run.>", () => { runs.reload(); overview.reload(); });
  useLive("system.function.>", () => overview.reload());
  if (runs.error) return <ErrorState error={runs.error} retry={runs.reload} />;
  if (overview.error) return <ErrorState error={overview.error} retry={overview.reload} />;
  if (!runs.data || !overview.data) return <Loading />;
  const buckets = runs.data.buckets;
  const o = overview.data;
  const depth = o.queue.reduce((n, q) => n + q.ready, 0);
  return (
    <section className="space-y-4">
      <h1 className="text-2xl font-semibold">Overview</h1>
      <div className="grid gap-3 md:grid-cols-3">
        <Sparkbars buckets={buckets} field="started" colour="bg-sky-500" label="Runs started" />
        <Sparkbars buckets={buckets} field="completed" colour="bg-emerald-500" label="Runs completed" />
        <Sparkbars buckets={buckets} field="failed" colour="bg-rose-500" label="Runs failed" />
      </div>
      {runs.data.has_next ? <p className="text-xs text-slate-500">More than 1 000 runs in the window: the bars count the newest 1 000.</p> : null}
      <div className="grid gap-3 md:grid-cols-4">
        <Tile label="Queue depth (ready jobs)" value={depth} testId="queue-depth">
          <ul className="mt-1 text-xs text-slate-500">{o.queue.slice(0, 5).map((q) => <li key={q.function_id}>{q.function_id}: {q.ready} ready, {q.scheduled} later</li>)}</ul>
        </Tile>
        <Tile label="Schedule-to-start p50 / p99" value={o.schedule_to_start_ms.samples ? `${duration(o.schedule_to_start_ms.p50 ?? 0)} / ${duration(o.schedule_to_start_ms.p99 ?? 0)}` : "–"} testId="schedule-to-start" />
        <Tile label="Workers connected" value={o.workers} testId="workers"><Link to="/workers">workers</Link></Tile>
        <Tile label="Open circuit breakers" value={o.open_breakers.length} testId="open-breakers">
          <ul className="mt-1 text-xs">{o.open_breakers.map((b) => <li key={b.key}><Link to={`/functions/${b.function_id}`}>{b.function_id}</Link> {b.state}</li>)}</ul>
        </Tile>
      </div>
    </section>
  );
}
