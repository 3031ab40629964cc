//! Runs: filter by function, status and time, cursor pages; new runs appear live.

import { useState } from "react";
import { useClient, useLive } from "../api/context";
import type { RunsPage as RunsAnswer, Run } from "../api/types";
import { useResource } from "../lib/resource";
import { navigate, setQuery, useLocation } from "../lib/router";
import { since, duration } from "../lib/format";
import { Table } from "../components/Table";
import { StatusBadge } from "../components/StatusBadge";
import { Link } from "../components/Link";
import { Pager } from "../components/Pager";
import { EmptyState, ErrorState, Loading } from "../components/States";

const STATUSES = ["", "pending", "running", "waiting", "sleeping", "paused", "completed", "failed", "cancelled"];
const WINDOWS: [string, number][] = [["any time", 0], ["last 15 min", 15], ["last hour", 60], ["last 24 h", 1440], ["last 7 days", 10080]];

export const EMIT_HINT = `curl -X POST localhost:9123/api/v1/events -H 'content-type: application/json' -d '{"name":"order.created","data":{}}'`;

function runDuration(r: Run): string {
  if (!r.started_at) return "–";
  const end = r.ended_at ? Date.parse(r.ended_at) : Date.now();
  return duration(end - Date.parse(r.started_at));
}

export function RunsPage() {
  const client = useClient();
  const { search } = useLocation();
  const fn = search.get("function") ?? "";
  const status = search.get("status") ?? "";
  const window = Number(search.get("window") ?? "0");
  const [cursors, setCursors] = useState<string[]>([]);
  const cursor = cursors[cursors.length - 1];
  const runs = useResource(
    () => client.get<RunsAnswer>("/api/v1/runs", { function_id: fn, status, since: window > 0 ? new Date(Date.now() - window * 60_000).toISOString() : undefined, cursor, limit: 50 }),
    [client, fn, status, window, cursor],
  );
  // Live: any run transition may change this page's rows; only the first page is refreshed.
  useLive("system.run.>", () => { if (!cursor) runs.reload(); });
  const update = (next: Record<string, string>) => {
    setCursors([]);
    setQuery("/runs", { function: fn, status, window: window ? String(window) : "", ...next });
  };
  return (
    <section>
      <h1 className="mb-4 text-2xl font-semibold">Runs</h1>
      <div className="mb-3 flex flex-wrap gap-3 text-sm">
        <label>Function <input aria-label="Function filter" defaultValue={fn} onKeyDown={(e) => { if (e.key === "Enter") update({ function: e.currentTarget.value.trim() }); }} placeholder="function id, Enter" className="rounded border px-2 py-0.5" /></label>
        <label>Status <select aria-label="Status filter" value={status} onChange={(e) => update({ status: e.target.value })} className="rounded border px-1 py-0.5">
          {STATUSES.map((s) => <option key={s} value={s}>{s || "any"}</option>)}
        </select></label>
        <label>Time <select aria-label="Time filter" value={window} onChange={(e) => update({ window: e.target.value === "0" ? "" : e.target.value })} className="rounded border px-1 py-0.5">
          {WINDOWS.map(([t, m]) => <option key={m} value={m}>{t}</option>)}
        </select></label>
      </div>
      {runs.error ? <ErrorState error={runs.error} retry={runs.reload} /> : !runs.data ? <Loading /> : runs.data.runs.length === 0 ? (
        <EmptyState title={fn || status || window ? "No runs match these filters" : "No runs yet"} hint={<>Emit an event that a function is triggered by: <code>{EMIT_HINT}</code></>} />
      ) : (
        <>
          <Table
            label="Runs"
            items={runs.data.runs}
            rowKey={(r) => r.id}
            onOpen={(r) => navigate(`/runs/${r.id}`)}
            columns={[
              { title: "Run", cell: (r) => <Link to={`/runs/${r.id}`}><code>{r.id}</code></Link> },
              { title: "Function", cell: (r) => <Link to={`/functions/${r.function_id}`}>{r.function_id}</Link> },
              { title: "Status", cell: (r) => <StatusBadge status={r.status} /> },
              { title: "Event", cell: (r) => r.event_name ?? "–" },
              { title: "Created", cell: (r) => since(r.created_at) },
              { title: "Duration", cell: runDuration },
            ]}
          />
          <Pager
            atFirst={cursors.length === 0}
            hasNext={runs.data.has_next}
            onFirst={() => setCursors([])}
            onNext={() => { const next = runs.data?.next_cursor; if (next) setCursors([...cursors, next]); }}
          />
        </>
      )}
    </section>
  );
}
