//! The flow map as a graph: nodes in four columns (webhook sources, events, functions, topics
//! and entity types) and typed edges, from the `/api/v1/flow/*` answers and the functions'
//! triggers. Positions are computed here so the drawing only draws.

export type NodeKind = "webhook" | "event" | "function" | "topic" | "stream";
export type EdgeKind = "triggers" | "emits" | "invokes" | "waits" | "publishes" | "streams" | "delivers";

export interface FlowNode { id: string; kind: NodeKind; label: string; x: number; y: number }
export interface FlowEdge { from: string; to: string; kind: EdgeKind }
export interface FlowGraph { nodes: FlowNode[]; edges: FlowEdge[]; width: number; height: number }

export interface FlowFacts {
  triggers: { function_id: string; event: string }[];
  emit: { event: string; function_id: string }[];
  invoke: { parent_function_id: string; child_function_id: string }[];
  wait: { function_id: string; event_name: string }[];
  topic: { function_id: string; topic: string }[];
  stream: { entity_type: string; event: string }[];
  webhooks: { sources: { id: string; name: string }[]; edges: { source_id: string; event: string }[] };
}

const COLUMN: Record<NodeKind, number> = { webhook: 0, event: 1, function: 2, topic: 3, stream: 3 };
export const COLUMN_WIDTH = 300;
export const ROW_HEIGHT = 36;

export function buildFlowGraph(f: FlowFacts): FlowGraph {
  const nodes = new Map<string, Omit<FlowNode, "x" | "y">>();
  const edges = new Map<string, FlowEdge>();
  const node = (kind: NodeKind, name: string, label = name): string => {
    const id = `${kind}:${name}`;
    if (!nodes.has(id)) nodes.set(id, { id, kind, label });
    return id;
  };
  const edge = (from: string, to: string, kind: EdgeKind) => edges.set(`${from}>${to}>${kind}`, { from, to, kind });

  for (const t of f.triggers) edge(node("event", t.event), node("function", t.function_id), "triggers");
  for (const e of f.emit) edge(node("function", e.function_id), node("event", e.event), "emits");
  for (const e of f.invoke) edge(node("function", e.parent_function_id), node("function", e.child_function_id), "invokes");
  for (const e of f.wait) edge(node("function", e.function_id), node("event", e.event_name), "waits");
  for (const e of f.topic) edge(node("function", e.function_id), node("topic", e.topic), "publishes");
  for (const e of f.stream) edge(node("event", e.event), node("stream", e.entity_type), "streams");
  const names = new Map(f.webhooks.sources.map((s) => [s.id, s.name || s.id]));
  for (const s of f.webhooks.sources) node("webhook", s.id, names.get(s.id));
  for (const e of f.webhooks.edges) edge(node("webhook", e.source_id, names.get(e.source_id)), node("event", e.event), "delivers");

  const rows = [0, 0, 0, 0];
  const placed: FlowNode[] = [...nodes.values()]
    .sort((a, b) => COLUMN[a.kind] - COLUMN[b.kind] || a.kind.localeCompare(b.kind) || a.label.localeCompare(b.label))
    .map((n) => {
      const column = COLUMN[n.kind];
      const row = rows[column] ?? 0;
      rows[column] = row + 1;
      return { ...n, x: column * COLUMN_WIDTH, y: row * ROW_HEIGHT };
    });
  return {
    nodes: placed,
    edges: [...edges.values()],
    width: 4 * COLUMN_WIDTH,
    height: Math.max(1, ...rows) * ROW_HEIGHT,
  };
}
