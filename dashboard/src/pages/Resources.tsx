//! The environment's other resources as lists: KV buckets and keys, config documents, secrets
//! (names and metadata only — the dashboard never asks for a value), workers, consumer groups
//! and the audit log.

import { useClient, useLive } from "../api/context";
import { useResource } from "../lib/resource";
import type { Resource } from "../lib/resource";
import { navigate } from "../lib/router";
import { clock, since } from "../lib/format";
import { Table } from "../components/Table";
import type { Column } from "../components/Table";
import { Link } from "../components/Link";
import { JsonView } from "../components/JsonView";
import { StatusBadge } from "../components/StatusBadge";
import { EmptyState, ErrorState, Loading } from "../components/States";
import { rowsOf } from "../lib/rows";
import type { Row } from "../lib/rows";

const text = (v: unknown): string => (v === undefined || v === null ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v));
const field = (title: string, key: string, render: (v: unknown, row: Row) => React.ReactNode = text): Column<Row> => ({ title, cell: (r) => render(r[key], r) });

function ListPage({ title, resource, columns, rowKey, empty, onOpen }: { title: string; resource: Resource<Row[]>; columns: Column<Row>[]; rowKey: (r: Row) => string; empty: React.ReactNode; onOpen?: (r: Row) => void }) {
  return (
    <section>
      <h1 className="mb-4 text-2xl font-semibold">{title}</h1>
      {resource.error ? <ErrorState error={resource.error} retry={resource.reload} /> : !resource.data ? <Loading /> : resource.data.length === 0 ? empty : (
        <Table label={title} items={resource.data} columns={columns} rowKey={rowKey} onOpen={onOpen} />
      )}
    </section>
  );
}

export function KvPage() {
  const client = useClient();
  const buckets = useResource(async () => rowsOf(await client.get("/api/v1/kv/buckets")), [client]);
  const name = (r: Row) => text(r.name ?? r.bucket);
  return <ListPage title="KV buckets" resource={buckets} rowKey={name} onOpen={(r) => navigate(`/kv/${encodeURIComponent(name(r))}`)}
    empty={<EmptyState title="No KV buckets yet" hint="Create one with ironflow-py: client.kv.create_bucket(…)." />}
    columns={[
      { title: "Bucket", cell: (r) => <Link to={`/kv/${encodeURIComponent(name(r))}`}>{name(r)}</Link> },
      field("Keys", "keys"), field("History", "history"), field("TTL (s)", "ttl_seconds"), field("Description", "description"),
    ]} />;
}

export function KvBucketPage({ bucket }: { bucket: string }) {
  const client = useClient();
  const keys = useResource(async () => rowsOf(await client.get(`/api/v1/kv/buckets/${encodeURIComponent(bucket)}/keys`)).map((k) => (typeof k === "string" ? { key: k } : k)), [client, bucket]);
  return <ListPage title={`KV: ${bucket}`} resource={keys} rowKey={(r) => text(r.key)}
    empty={<EmptyState title="This bucket has no keys" />}
    columns={[field("Key", "key"), field("Revision", "revision"), { title: "Value", cell: (r) => (r.value !== undefined ? <JsonView label="value" value={r.value} /> : "–") }, field("Updated", "updated_at", (v) => since(typeof v === "string" ? v : null))]} />;
}

export function ConfigPage() {
  const client = useClient();
  const configs = useResource(async () => rowsOf(await client.get("/api/v1/config")), [client]);
  useLive("system.config.>", configs.reload);
  return <ListPage title="Config" resource={configs} rowKey={(r) => text(r.name)}
    empty={<EmptyState title="No config documents yet" hint="client.config.set(name, {...}) stores one; workers watch it live." />}
    columns={[field("Name", "name"), field("Revision", "revision"), { title: "Document", cell: (r) => <JsonView label="data" value={r.data ?? r.value} /> }, field("Updated", "updated_at", (v) => clock(typeof v === "string" ? v : null))]} />;
}

export function SecretsPage() {
  const client = useClient();
  // The list answer carries names and metadata; values are only ever returned by GET /secrets/{name}, which this page never calls.
  const secrets = useResource(async () => rowsOf(await client.get("/api/v1/secrets")).map((r) => Object.fromEntries(Object.entries(r).filter(([k]) => k !== "value"))), [client]);
  useLive("system.secret.>", secrets.reload);
  return <ListPage title="Secrets" resource={secrets} rowKey={(r) => text(r.name)}
    empty={<EmptyState title="No secrets yet" hint="client.secrets.create(name, value) stores one, encrypted at rest." />}
    columns={[field("Name", "name"), field("Version", "version"), field("Description", "description"), field("Updated", "updated_at", (v) => clock(typeof v === "string" ? v : null))]} />;
}

export function WorkersPage() {
  const client = useClient();
  const workers = useResource(async () => rowsOf(await client.get("/api/v1/workers")), [client]);
  useLive("system.run.>", workers.reload);
  return <ListPage title="Workers" resource={workers} rowKey={(r) => text(r.id ?? r.worker_id)}
    empty={<EmptyState title="No workers connected" hint="Start one: ironflow-py's worker (pull) or a push endpoint." />}
    columns={[field("Worker", "id"), field("Status", "status", (v) => <StatusBadge status={text(v)} />), field("Functions", "functions"), field("Active jobs", "active_jobs"), field("Last heartbeat", "last_heartbeat", (v) => since(typeof v === "string" ? v : null))]} />;
}

export function GroupsPage() {
  const client = useClient();
  const groups = useResource(async () => rowsOf(await client.connect("PubSubService", "ListConsumerGroups", {})), [client]);
  return <ListPage title="Consumer groups" resource={groups} rowKey={(r) => text(r.name)}
    empty={<EmptyState title="No consumer groups yet" hint="A subscriber that joins a group (consumerGroup on /ws, or JoinConsumerGroup) creates one." />}
    columns={[field("Group", "name"), field("Topic pattern", "topicPattern"), field("Ack mode", "ackMode"), field("Members", "memberCount"), field("Pending", "pendingCount")]} />;
}

export function AuditPage() {
  const client = useClient();
  const audit = useResource(async () => rowsOf(await client.get("/api/v1/audit", { limit: 100 })), [client]);
  return <ListPage title="Audit log" resource={audit} rowKey={(r) => text(r.id ?? r.seq)}
    empty={<EmptyState title="Nothing audited yet" hint="Admin changes (keys, roles, policies, settings) are recorded here." />}
    columns={[field("When", "created_at", (v) => clock(typeof v === "string" ? v : null)), field("Actor", "actor_id"), field("Action", "action"), field("Resource", "resource_type"), { title: "Detail", cell: (r) => <JsonView label="entry" value={r} /> }]} />;
}
