//! Flow: how functions, events, topics, entity streams and webhook sources connect, drawn from
//! the `/api/v1/flow/*` routes (what runs did) and the functions' triggers.

import { useClient, useLive } from "../api/context";
import type { FunctionsPage } from "../api/types";
import { useResource } from "../lib/resource";
import { buildFlowGraph } from "../lib/flowGraph";
import type { FlowFacts } from "../lib/flowGraph";
import { FlowDiagram, EDGE_STYLE } from "../components/FlowDiagram";
import { EmptyState, ErrorState, Loading } from "../components/States";

type Edges<T> = { edges: T[] };

export function FlowPage() {
  const client = useClient();
  const facts = useResource<FlowFacts>(async () => {
    const [fns, emit, invoke, wait, topic, stream, webhooks] = await Promise.all([
      client.get<FunctionsPage>("/api/v1/functions", { limit: 1000 }),
      client.get<Edges<FlowFacts["emit"][number]>>("/api/v1/flow/emit-edges"),
      client.get<Edges<FlowFacts["invoke"][number]>>("/api/v1/flow/invoke-edges"),
      client.get<Edges<FlowFacts["wait"][number]>>("/api/v1/flow/wait-edges"),
      client.get<Edges<FlowFacts["topic"][number]>>("/api/v1/flow/topic-edges"),
      client.get<Edges<FlowFacts["stream"][number]>>("/api/v1/flow/stream-edges"),
      client.get<FlowFacts["webhooks"]>("/api/v1/flow/webhooks"),
    ]);
    const triggers = fns.functions.flatMap((f) => (f.triggers ?? []).filter((t) => t.event).map((t) => ({ function_id: f.id, event: t.event ?? "" })));
    return { triggers, emit: emit.edges, invoke: invoke.edges, wait: wait.edges, topic: topic.edges, stream: stream.edges, webhooks };
  }, [client]);
  useLive("system.function.>", facts.reload);
  if (facts.error) return <ErrorState error={facts.error} retry={facts.reload} />;
  if (!facts.data) return <Loading />;
  const graph = buildFlowGraph(facts.data);
  return (
    <section className="space-y-3">
      <h1 className="text-2xl font-semibold">Flow</h1>
      <ul className="flex flex-wrap gap-4 text-xs" aria-label="Legend">
        {Object.entries(EDGE_STYLE).map(([kind, s]) => <li key={kind} className="flex items-center gap-1"><span className="inline-block h-0.5 w-5" style={{ background: s.colour }} />{s.label}</li>)}
      </ul>
      {graph.nodes.length === 0 ? <EmptyState title="Nothing connected yet" hint="Register functions with triggers and let them run: invokes, waits, publishes, appends and webhook deliveries appear here." /> : (
        <div className="overflow-auto"><FlowDiagram graph={graph} /></div>
      )}
    </section>
  );
}
