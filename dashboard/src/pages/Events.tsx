//! Events: search and filters with cursor pages (new events appear live), and one event's
//! payload with the runs it started.

import { useState } from "react";
import { useClient, useLive } from "../api/context";
import type { EventRecord, EventsPage as EventsAnswer } from "../api/types";
import { useResource } from "../lib/resource";
import { navigate, setQuery, useLocation } from "../lib/router";
import { clock, since } from "../lib/format";
import { Table } from "../components/Table";
import { Link } from "../components/Link";
import { Pager } from "../components/Pager";
import { JsonView } from "../components/JsonView";
import { EmptyState, ErrorState, Loading } from "../components/States";
import { EMIT_HINT } from "./Runs";

export function EventsPage() {
  const client = useClient();
  const { search } = useLocation();
  const name = search.get("name") ?? "";
  const text = search.get("q") ?? "";
  const source = search.get("source") ?? "";
  const [cursors, setCursors] = useState<string[]>([]);
  const cursor = cursors[cursors.length - 1];
  const events = useResource(() => client.get<EventsAnswer>("/api/v1/events", { name, search: text, source, cursor, limit: 50 }), [client, name, text, source, cursor]);
  // Every stored event, live, while this page is open (only the first page follows).
  useLive("events:>", () => { if (!cursor) events.reload(); });
  const update = (next: Record<string, string>) => {
    setCursors([]);
    setQuery("/events", { name, q: text, source, ...next });
  };
  return (
    <section>
      <h1 className="mb-4 text-2xl font-semibold">Events</h1>
      <div className="mb-3 flex flex-wrap gap-3 text-sm">
        <input aria-label="Event name" defaultValue={name} placeholder="name (Enter)" onKeyDown={(e) => { if (e.key === "Enter") update({ name: e.currentTarget.value.trim() }); }} className="rounded border px-2 py-0.5" />
        <input aria-label="Search payloads" defaultValue={text} placeholder="search data (Enter)" onKeyDown={(e) => { if (e.key === "Enter") update({ q: e.currentTarget.value.trim() }); }} className="rounded border px-2 py-0.5" />
        <input aria-label="Source" defaultValue={source} placeholder="source (Enter)" onKeyDown={(e) => { if (e.key === "Enter") update({ source: e.currentTarget.value.trim() }); }} className="rounded border px-2 py-0.5" />
      </div>
      {events.error ? <ErrorState error={events.error} retry={events.reload} /> : !events.data ? <Loading /> : events.data.events.length === 0 ? (
        <EmptyState title={name || text || source ? "No events match" : "No events yet"} hint={<>Emit one: <code>{EMIT_HINT}</code></>} />
      ) : (
        <>
          <Table
            label="Events"
            items={events.data.events}
            rowKey={(e) => e.id}
            onOpen={(e) => navigate(`/events/${e.id}`)}
            columns={[
              { title: "Event", cell: (e) => <Link to={`/events/${e.id}`}>{e.name}</Link> },
              { title: "Source", cell: (e) => e.source },
              { title: "Entity", cell: (e) => (e.entity_id ? <Link to={`/streams/${encodeURIComponent(e.entity_type ?? "")}/${encodeURIComponent(e.entity_id)}`}>{e.entity_type}/{e.entity_id} v{e.entity_version}</Link> : "–") },
              { title: "Data", cell: (e) => <JsonView label="data" value={e.data} /> },
              { title: "Received", cell: (e) => since(e.timestamp) },
            ]}
          />
          <Pager atFirst={cursors.length === 0} hasNext={events.data.has_next} onFirst={() => setCursors([])} onNext={() => { const n = events.data?.next_cursor; if (n) setCursors([...cursors, n]); }} />
        </>
      )}
    </section>
  );
}

export function EventPage({ id }: { id: string }) {
  const client = useClient();
  const event = useResource(() => client.get<EventRecord>(`/api/v1/events/${encodeURIComponent(id)}`), [client, id]);
  if (event.error) return <ErrorState error={event.error} retry={event.reload} />;
  if (!event.data) return <Loading />;
  const e = event.data;
  return (
    <section className="space-y-3">
      <p className="text-xs text-slate-500"><Link to="/events">Events</Link> / {e.id}</p>
      <h1 className="text-2xl font-semibold">{e.name}</h1>
      <p className="text-xs text-slate-500">{clock(e.timestamp)} · source {e.source} · seq {e.seq}{e.idempotency_key ? ` · key ${e.idempotency_key}` : ""}</p>
      <div className="rounded border border-slate-200 bg-white p-3">
        <JsonView label="data" value={e.data} open />
        <JsonView label="metadata" value={e.metadata} />
      </div>
      <div className="rounded border border-slate-200 bg-white p-3">
        <h2 className="font-medium">Runs it started</h2>
        {(e.run_ids ?? []).length === 0 ? <p className="text-sm text-slate-500">No function is triggered by {e.name}.</p> : (
          <ul className="text-sm">{(e.run_ids ?? []).map((r) => <li key={r}><Link to={`/runs/${r}`}><code>{r}</code></Link></li>)}</ul>
        )}
      </div>
    </section>
  );
}
