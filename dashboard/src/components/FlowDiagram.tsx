//! The flow map drawn: nodes as labelled boxes in their columns, edges as curves coloured by kind.

import type { EdgeKind, FlowGraph, NodeKind } from "../lib/flowGraph";

const NODE_WIDTH = 200;
const NODE_HEIGHT = 26;
const PAD = 20;

const NODE_STYLE: Record<NodeKind, string> = {
  webhook: "fill-amber-50 stroke-amber-500",
  event: "fill-sky-50 stroke-sky-500",
  function: "fill-indigo-50 stroke-indigo-500",
  topic: "fill-emerald-50 stroke-emerald-500",
  stream: "fill-violet-50 stroke-violet-500",
};

export const EDGE_STYLE: Record<EdgeKind, { colour: string; dash?: string; label: string }> = {
  triggers: { colour: "#0ea5e9", label: "triggers" },
  emits: { colour: "#6366f1", label: "emits" },
  invokes: { colour: "#a855f7", label: "invokes" },
  waits: { colour: "#f59e0b", dash: "4 3", label: "waits for" },
  publishes: { colour: "#10b981", label: "publishes to" },
  streams: { colour: "#8b5cf6", dash: "2 2", label: "in stream" },
  delivers: { colour: "#d97706", label: "delivers" },
};

export function FlowDiagram({ graph }: { graph: FlowGraph }) {
  const byId = new Map(graph.nodes.map((n) => [n.id, n]));
  return (
    <svg role="img" aria-label="Flow map" width={graph.width + PAD * 2} height={graph.height + PAD * 2} className="rounded border border-slate-200 bg-white">
      <g transform={`translate(${PAD},${PAD})`}>
        {graph.edges.map((e) => {
          const a = byId.get(e.from);
          const b = byId.get(e.to);
          if (!a || !b) return null;
          const style = EDGE_STYLE[e.kind];
          // Forward edges leave a box's right side; backward and same-column ones loop on the right.
          const forward = b.x > a.x;
          const x1 = a.x + NODE_WIDTH;
          const y1 = a.y + NODE_HEIGHT / 2;
          const x2 = forward ? b.x : b.x + NODE_WIDTH;
          const y2 = b.y + NODE_HEIGHT / 2;
          const bend = forward ? (x2 - x1) / 2 : 30 + Math.abs(y2 - y1) / 4;
          const path = forward ? `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}` : `M${x1},${y1} C${x1 + bend},${y1} ${x2 + bend},${y2} ${x2},${y2}`;
          return <path key={`${e.from}>${e.to}>${e.kind}`} data-edge={e.kind} d={path} fill="none" stroke={style.colour} strokeWidth={1.5} strokeDasharray={style.dash}><title>{`${a.label} ${style.label} ${b.label}`}</title></path>;
        })}
        {graph.nodes.map((n) => (
          <g key={n.id} data-node={n.id} transform={`translate(${n.x},${n.y})`}>
            <rect width={NODE_WIDTH} height={NODE_HEIGHT} rx={4} className={NODE_STYLE[n.kind]} />
            <text x={8} y={17} className="fill-slate-800 text-xs">{n.label.length > 28 ? `${n.label.slice(0, 27)}…` : n.label}</text>
          </g>
        ))}
      </g>
    </svg>
  );
}
