//! Functions: the list with status, and one function's definition, versions and rollback,
//! pause / activate, triggers, circuit breakers per push endpoint with reset, and a test event.

import { useState } from "react";
import { useClient, useLive } from "../api/context";
import type { FunctionRecord, FunctionsPage as FunctionsAnswer } from "../api/types";
import { useResource } from "../lib/resource";
import { navigate } from "../lib/router";
import { clock, since } from "../lib/format";
import { Table } from "../components/Table";
import { StatusBadge } from "../components/StatusBadge";
import { Link } from "../components/Link";
import { JsonView } from "../components/JsonView";
import { JsonEditor } from "../components/JsonEditor";
import { EmptyState, ErrorState, Loading } from "../components/States";

export interface Breaker { key: string; function_id: string; endpoint: string; state: string; consecutive_fails: number; last_error?: string; open_until?: string }

interface Trigger { event?: string; cron?: string; expression?: string }
interface HistoryEntry { entityVersion?: string; changeType?: string; changeReason?: string; recordedAt?: string; actorId?: string }

function triggersOf(f: FunctionRecord): Trigger[] {
  return Array.isArray(f.triggers) ? f.triggers : [];
}

export function FunctionsPage() {
  const client = useClient();
  const fns = useResource(() => client.get<FunctionsAnswer>("/api/v1/functions", { limit: 200 }), [client]);
  const breakers = useResource(() => client.get<Breaker[]>("/api/v1/circuit-breakers"), [client]);
  useLive("system.function.>", () => { fns.reload(); breakers.reload(); });
  if (fns.error) return <ErrorState error={fns.error} retry={fns.reload} />;
  if (!fns.data) return <Loading />;
  const open = new Map<string, Breaker[]>();
  for (const b of breakers.data ?? []) if (b.state !== "closed") open.set(b.function_id, [...(open.get(b.function_id) ?? []), b]);
  return (
    <section>
      <h1 className="mb-4 text-2xl font-semibold">Functions</h1>
      {fns.data.functions.length === 0 ? (
        <EmptyState title="No functions registered yet" hint="Start a worker (ironflow-py's serve(), or a push endpoint registered with RegisterFunction) and its functions appear here." />
      ) : (
        <Table
          label="Functions"
          items={fns.data.functions}
          rowKey={(f) => f.id}
          onOpen={(f) => navigate(`/functions/${f.id}`)}
          columns={[
            { title: "Function", cell: (f) => <Link to={`/functions/${f.id}`}>{f.id}</Link> },
            { title: "Status", cell: (f) => <StatusBadge status={f.status} /> },
            { title: "Triggers", cell: (f) => triggersOf(f).map((t) => t.event ?? t.cron ?? "").filter(Boolean).join(", ") || "–" },
            { title: "Version", cell: (f) => f.version },
            { title: "Breakers", cell: (f) => (open.get(f.id) ?? []).map((b) => <StatusBadge key={b.key} status={b.state} />) },
            { title: "Updated", cell: (f) => since(f.updated_at) },
          ]}
        />
      )}
    </section>
  );
}

function BreakerList({ breakers, onReset }: { breakers: Breaker[]; onReset: (key: string) => void }) {
  if (breakers.length === 0) return <p className="text-sm text-slate-500">No push endpoint has failed: no breakers.</p>;
  return (
    <ul className="space-y-1 text-sm" aria-label="Circuit breakers">
      {breakers.map((b) => (
        <li key={b.key} className="flex items-center gap-2" data-breaker={b.endpoint}>
          <StatusBadge status={b.state} />
          <code className="truncate">{b.endpoint}</code>
          <span className="text-xs text-slate-500">{b.consecutive_fails} consecutive failures{b.last_error ? ` · ${b.last_error}` : ""}</span>
          {b.state !== "closed" ? <button type="button" className="rounded border px-2 py-0.5 text-xs" onClick={() => onReset(b.key)}>Reset</button> : null}
        </li>
      ))}
    </ul>
  );
}

export function FunctionPage({ id }: { id: string }) {
  const client = useClient();
  const fn = useResource(() => client.get<FunctionRecord>(`/api/v1/functions/${encodeURIComponent(id)}`), [client, id]);
  const versions = useResource(() => client.connect<{ entries?: HistoryEntry[] }>("IronflowService", "ListFunctionHistory", { functionId: id, limit: 50 }), [client, id]);
  const breakers = useResource(async () => (await client.get<Breaker[]>("/api/v1/circuit-breakers")).filter((b) => b.function_id === id), [client, id]);
  const [message, setMessage] = useState<{ ok: boolean; text: string } | null>(null);
  useLive(`system.function.${id}.>`, () => { fn.reload(); versions.reload(); breakers.reload(); });
  const act = async (label: string, call: () => Promise<unknown>) => {
    setMessage(null);
    try {
      await call();
      setMessage({ ok: true, text: `${label}: done` });
      fn.reload(); versions.reload(); breakers.reload();
    } catch (e) {
      setMessage({ ok: false, text: `${label}: ${e instanceof Error ? e.message : String(e)}` });
    }
  };
  if (fn.error) return <ErrorState error={fn.error} retry={fn.reload} />;
  if (!fn.data) return <Loading />;
  const f = fn.data;
  const paused = f.status === "paused";
  const eventTrigger = triggersOf(f).find((t) => t.event && !t.event.includes("*"))?.event;
  return (
    <section className="space-y-4">
      <header>
        <p className="text-xs text-slate-500"><Link to="/functions">Functions</Link> / {f.id}</p>
        <h1 className="flex items-center gap-3 text-2xl font-semibold">{f.id} <StatusBadge status={f.status} /></h1>
        <p className="text-xs text-slate-500">version {f.version} · updated {clock(f.updated_at)} · <Link to={`/runs?function=${encodeURIComponent(f.id)}`}>its runs</Link></p>
      </header>
      <div className="flex flex-wrap gap-2 text-sm">
        <button type="button" className="rounded border px-2 py-0.5" onClick={() => void act(paused ? "Activate" : "Pause", () => client.connect("IronflowService", "UpdateFunctionStatus", { id: f.id, status: paused ? "FUNCTION_STATUS_ACTIVE" : "FUNCTION_STATUS_PAUSED" }))}>{paused ? "Activate" : "Pause"}</button>
        {message ? <span role="status" className={message.ok ? "text-emerald-700" : "text-rose-700"}>{message.text}</span> : null}
      </div>
      <div className="grid gap-4 lg:grid-cols-2">
        <div className="space-y-2 rounded border border-slate-200 bg-white p-3">
          <h2 className="font-medium">Triggers</h2>
          <ul className="text-sm">{triggersOf(f).map((t, i) => <li key={i}><code>{t.event ?? t.cron}</code>{t.expression ? <span className="text-slate-500"> if {t.expression}</span> : null}</li>)}</ul>
          <h2 className="font-medium">Circuit breakers</h2>
          <BreakerList breakers={breakers.data ?? []} onReset={(key) => void act("Reset breaker", () => client.rest("POST", `/api/v1/circuit-breakers/${encodeURIComponent(key)}/reset`, {}))} />
          {eventTrigger ? (
            <details>
              <summary className="cursor-pointer text-sm font-medium text-indigo-700">Send a test event ({eventTrigger})</summary>
              <JsonEditor initial={{}} submitLabel="Send test event" onSubmit={(data) => void act("Test event", () => client.rest("POST", "/api/v1/events", { name: eventTrigger, data }))} />
            </details>
          ) : null}
        </div>
        <div className="space-y-2 rounded border border-slate-200 bg-white p-3">
          <h2 className="font-medium">Versions</h2>
          {versions.error ? <p className="text-sm text-rose-700">{versions.error.message}</p> : (
            <ol className="space-y-1 text-sm" aria-label="Versions">
              {(versions.data?.entries ?? []).map((v) => (
                <li key={v.entityVersion} className="flex items-center gap-2">
                  <span className="w-10">v{v.entityVersion}</span><span className="w-28 text-slate-500">{v.changeType}</span><span className="text-xs text-slate-500">{clock(v.recordedAt)}</span>
                  {Number(v.entityVersion) !== f.version ? <button type="button" className="rounded border px-2 py-0.5 text-xs" onClick={() => void act(`Roll back to v${v.entityVersion}`, () => client.connect("IronflowService", "RollbackFunction", { functionId: f.id, version: v.entityVersion, changeReason: "dashboard rollback" }))}>Roll back</button> : <span className="text-xs text-emerald-700">current</span>}
                </li>
              ))}
            </ol>
          )}
          <JsonView label="definition" value={f} />
        </div>
      </div>
    </section>
  );
}
