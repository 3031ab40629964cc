//! Entity streams: the list, and one stream's events and latest snapshot.

import { useClient } from "../api/context";
import { useResource } from "../lib/resource";
import { navigate } from "../lib/router";
import { clock } from "../lib/format";
import { Table } from "../components/Table";
import { Link } from "../components/Link";
import { JsonView } from "../components/JsonView";
import { EmptyState, ErrorState, Loading } from "../components/States";

interface StreamInfo { entityId: string; entityType?: string; version?: string; eventCount?: string; updatedAt?: string; deleted?: boolean }
interface StreamEvent { id: string; name: string; data?: unknown; dataValue?: unknown; entityVersion?: string; timestamp?: string }
interface Snapshot { snapshotId?: string; entityVersion?: string; state?: unknown; stateValue?: unknown; createdAt?: string }

const streamPath = (s: StreamInfo) => `/streams/${encodeURIComponent(s.entityType || "-")}/${encodeURIComponent(s.entityId)}`;

export function StreamsPage() {
  const client = useClient();
  const streams = useResource(() => client.connect<{ streams?: StreamInfo[]; totalCount?: number }>("EntityStreamService", "ListStreams", { limit: 200 }), [client]);
  if (streams.error) return <ErrorState error={streams.error} retry={streams.reload} />;
  if (!streams.data) return <Loading />;
  const list = streams.data.streams ?? [];
  return (
    <section>
      <h1 className="mb-4 text-2xl font-semibold">Entity streams</h1>
      {list.length === 0 ? <EmptyState title="No entity streams yet" hint="Append an event to an entity (ironflow-py: client.streams.append(entity_id, …)) to start one." /> : (
        <Table label="Streams" items={list} rowKey={(s) => s.entityId} onOpen={(s) => navigate(streamPath(s))} columns={[
          { title: "Entity", cell: (s) => <Link to={streamPath(s)}>{s.entityId}</Link> },
          { title: "Type", cell: (s) => s.entityType ?? "–" },
          { title: "Version", cell: (s) => s.version ?? "0" },
          { title: "Events", cell: (s) => s.eventCount ?? "0" },
          { title: "Updated", cell: (s) => clock(s.updatedAt) },
        ]} />
      )}
    </section>
  );
}

export function StreamPage({ entityType, entityId }: { entityType: string; entityId: string }) {
  const client = useClient();
  const events = useResource(() => client.connect<{ events?: StreamEvent[] }>("EntityStreamService", "ReadStream", { entityId, limit: 500 }), [client, entityId]);
  const snapshot = useResource(() => client.connect<Snapshot>("EntityStreamService", "GetSnapshot", { entityId }).catch(() => ({}) as Snapshot), [client, entityId]);
  if (events.error) return <ErrorState error={events.error} retry={events.reload} />;
  if (!events.data) return <Loading />;
  return (
    <section className="space-y-3">
      <p className="text-xs text-slate-500"><Link to="/streams">Entity streams</Link> / {entityType} / {entityId}</p>
      <h1 className="text-2xl font-semibold">{entityId}</h1>
      <div className="rounded border border-slate-200 bg-white p-3">
        <h2 className="font-medium">Latest snapshot</h2>
        {snapshot.data?.snapshotId ? <JsonView label={`state at v${snapshot.data.entityVersion ?? "?"} (${clock(snapshot.data.createdAt)})`} value={snapshot.data.stateValue ?? snapshot.data.state} open /> : <p className="text-sm text-slate-500">No snapshot.</p>}
      </div>
      <ol className="space-y-1 rounded border border-slate-200 bg-white p-3 text-sm" aria-label="Stream events">
        {(events.data.events ?? []).map((e) => (
          <li key={e.id} className="flex gap-3"><span className="w-10 text-slate-500">v{e.entityVersion}</span><span className="w-48">{e.name}</span><JsonView label="data" value={e.dataValue ?? e.data} /></li>
        ))}
      </ol>
    </section>
  );
}
