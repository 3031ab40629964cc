//! Projections: status, lag and errors; one projection's rebuild with progress and, for SQL
//! projections, its rows.

import { useEffect, useLayoutEffect, useRef, useState } from "react";
import { useApi, useClient } from "../api/context";
import { useResource } from "../lib/resource";
import { navigate } from "../lib/router";
import { clock } from "../lib/format";
import { Table } from "../components/Table";
import { Link } from "../components/Link";
import { StatusBadge } from "../components/StatusBadge";
import { EmptyState, ErrorState, Loading } from "../components/States";

interface ProjectionInfo { name: string; mode?: string; status?: string; type?: string; events?: string[]; lastEventSeq?: string; errorMessage?: string; updatedAt?: string }
interface ProjectionStatus { name?: string; status?: string; lag?: string; lastEventSeq?: string; errorMessage?: string; rebuildTargetSeq?: string; rebuildStartCursor?: string; updatedAt?: string }
interface SqlRows { columns?: string[]; rows?: { values?: string[] }[]; totalCount?: number }

/** The projection in a `GetProjection` answer (its registry entry holds the definition). */
export function projectionOf(answer: unknown): ProjectionInfo | undefined {
  if (typeof answer !== "object" || answer === null) return undefined;
  const a = answer as { registry?: ProjectionInfo; projection?: ProjectionInfo };
  return a.registry ?? a.projection ?? (answer as ProjectionInfo);
}

/** How far a rebuild has come, 0–100, from the status's cursor fields. */
export function rebuildProgress(s: ProjectionStatus): number | null {
  const target = Number(s.rebuildTargetSeq ?? 0);
  if (!target) return null;
  const start = Number(s.rebuildStartCursor ?? 0);
  const at = Number(s.lastEventSeq ?? 0);
  if (target <= start) return 100;
  return Math.max(0, Math.min(100, Math.round(((at - start) / (target - start)) * 100)));
}

function useStatus(name: string) {
  const client = useClient();
  return useResource(() => client.connect<ProjectionStatus>("ProjectionService", "GetProjectionStatus", { name }), [client, name]);
}

/** Reloads on every event a projection consumes (its lag moves with them). */
function useLiveEvents(patterns: readonly string[], reload: () => void): void {
  const { feed } = useApi();
  const key = patterns.join(",");
  const handler = useRef(reload);
  useLayoutEffect(() => {
    handler.current = reload;
  });
  useEffect(() => {
    if (!key) return;
    const stops = key.split(",").map((p) => feed.subscribe(`events:${p}`, () => handler.current()));
    return () => { for (const stop of stops) stop(); };
  }, [feed, key]);
}

function LagCell({ name, events }: { name: string; events: readonly string[] }) {
  const status = useStatus(name);
  useLiveEvents(events, status.reload);
  return <span data-lag={name}>{status.data ? status.data.lag ?? "0" : "…"}</span>;
}

export function ProjectionsPage() {
  const client = useClient();
  const list = useResource(() => client.connect<{ projections?: ProjectionInfo[] }>("ProjectionService", "ListProjections", {}), [client]);
  if (list.error) return <ErrorState error={list.error} retry={list.reload} />;
  if (!list.data) return <Loading />;
  const items = list.data.projections ?? [];
  return (
    <section>
      <h1 className="mb-4 text-2xl font-semibold">Projections</h1>
      {items.length === 0 ? <EmptyState title="No projections yet" hint="Register one with ironflow-py (@projection, or client.projections.create_sql(…))." /> : (
        <Table label="Projections" items={items} rowKey={(p) => p.name} onOpen={(p) => navigate(`/projections/${encodeURIComponent(p.name)}`)} columns={[
          { title: "Projection", cell: (p) => <Link to={`/projections/${encodeURIComponent(p.name)}`}>{p.name}</Link> },
          { title: "Type", cell: (p) => p.type || p.mode || "–" },
          { title: "Status", cell: (p) => <StatusBadge status={p.status ?? "unknown"} /> },
          { title: "Lag (events)", cell: (p) => <LagCell name={p.name} events={p.events ?? []} /> },
          { title: "Error", cell: (p) => (p.errorMessage ? <span className="text-rose-700">{p.errorMessage}</span> : "–") },
        ]} />
      )}
    </section>
  );
}

function SqlRowsTable({ name }: { name: string }) {
  const client = useClient();
  const rows = useResource(() => client.connect<SqlRows>("ProjectionService", "QuerySQLProjection", { name, limit: 100 }), [client, name]);
  if (rows.error) return null;
  if (!rows.data) return <Loading />;
  const columns = rows.data.columns ?? [];
  return (
    <div className="overflow-auto rounded border border-slate-200 bg-white p-3">
      <h2 className="mb-1 font-medium">Rows <span className="text-xs text-slate-500">({rows.data.totalCount ?? 0})</span></h2>
      <table className="text-xs" aria-label="Projection rows">
        <thead><tr>{columns.map((c) => <th key={c} className="px-2 text-left">{c}</th>)}</tr></thead>
        <tbody>{(rows.data.rows ?? []).map((r, i) => <tr key={i}>{(r.values ?? []).map((v, j) => <td key={j} className="px-2">{v}</td>)}</tr>)}</tbody>
      </table>
    </div>
  );
}

export function ProjectionPage({ name }: { name: string }) {
  const client = useClient();
  const info = useResource(() => client.connect<ProjectionInfo>("ProjectionService", "GetProjection", { name }), [client, name]);
  const status = useStatus(name);
  const [message, setMessage] = useState<string | null>(null);
  const consumed = projectionOf(info.data)?.events ?? [];
  useLiveEvents(consumed, status.reload);
  const progress = status.data ? rebuildProgress(status.data) : null;
  const rebuilding = progress !== null && progress < 100;
  // A rebuild advances without system events: follow it while it runs.
  useEffect(() => {
    if (!rebuilding) return;
    const timer = window.setInterval(status.reload, 1000);
    return () => window.clearInterval(timer);
  }, [rebuilding, status.reload]);
  if (info.error) return <ErrorState error={info.error} retry={info.reload} />;
  if (!info.data || !status.data) return <Loading />;
  const p = projectionOf(info.data) ?? { name };
  const s = status.data;
  return (
    <section className="space-y-3">
      <p className="text-xs text-slate-500"><Link to="/projections">Projections</Link> / {name}</p>
      <h1 className="flex items-center gap-3 text-2xl font-semibold">{name} <StatusBadge status={s.status ?? "unknown"} /></h1>
      <div className="grid gap-3 md:grid-cols-3">
        <div className="rounded border border-slate-200 bg-white p-3"><div className="text-xs text-slate-500">Lag (events behind)</div><div className="text-2xl font-semibold" data-testid="projection-lag">{s.lag ?? "0"}</div></div>
        <div className="rounded border border-slate-200 bg-white p-3"><div className="text-xs text-slate-500">Position</div><div className="text-2xl font-semibold">{s.lastEventSeq ?? "0"}</div><div className="text-xs text-slate-500">updated {clock(s.updatedAt)}</div></div>
        <div className="rounded border border-slate-200 bg-white p-3">
          <div className="text-xs text-slate-500">Rebuild</div>
          {progress !== null ? <div><progress max={100} value={progress} className="w-full" /> <span className="text-xs">{progress}%</span></div> : null}
          <button type="button" className="mt-1 rounded border px-2 py-0.5 text-sm" onClick={() => {
            setMessage(null);
            client.connect("ProjectionService", "RebuildProjection", { name }).then(() => { setMessage("Rebuild started"); status.reload(); }, (e: unknown) => setMessage(e instanceof Error ? e.message : String(e)));
          }}>Rebuild</button>
          {message ? <p role="status" className="text-xs">{message}</p> : null}
        </div>
      </div>
      {s.errorMessage ? <p role="alert" className="rounded bg-rose-50 p-2 text-sm text-rose-800">{s.errorMessage}</p> : null}
      <p className="text-xs text-slate-500">Consumes: {(p.events ?? []).join(", ") || "–"}</p>
      {p.type === "sql" || p.mode === "sql" ? <SqlRowsTable name={name} /> : null}
    </section>
  );
}
