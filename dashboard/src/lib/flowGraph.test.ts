import { describe, expect, it } from "vitest";
import { buildFlowGraph, COLUMN_WIDTH } from "./flowGraph";

describe("buildFlowGraph", () => {
  it("places each kind in its column and keeps every edge once", () => {
    const g = buildFlowGraph({
      triggers: [{ function_id: "checkout", event: "order.created" }, { function_id: "checkout", event: "order.created" }],
      emit: [{ event: "order.paid", function_id: "checkout" }],
      invoke: [{ parent_function_id: "checkout", child_function_id: "charge" }],
      wait: [{ function_id: "checkout", event_name: "payment.confirmed" }],
      topic: [{ function_id: "checkout", topic: "orders" }],
      stream: [{ entity_type: "order", event: "order.paid" }],
      webhooks: { sources: [{ id: "wh_1", name: "Stripe" }], edges: [{ source_id: "wh_1", event: "payment.confirmed" }] },
    });
    const at = (id: string) => g.nodes.find((n) => n.id === id);
    expect(at("webhook:wh_1")).toMatchObject({ x: 0, label: "Stripe" });
    expect(at("event:order.created")?.x).toBe(COLUMN_WIDTH);
    expect(at("function:checkout")?.x).toBe(2 * COLUMN_WIDTH);
    expect(at("topic:orders")?.x).toBe(3 * COLUMN_WIDTH);
    expect(at("stream:order")?.x).toBe(3 * COLUMN_WIDTH);
    expect(g.edges.filter((e) => e.kind === "triggers")).toHaveLength(1);
    expect(g.edges.map((e) => e.kind).sort()).toEqual(["delivers", "emits", "invokes", "publishes", "streams", "triggers", "waits"]);
    const ys = g.nodes.filter((n) => n.x === COLUMN_WIDTH).map((n) => n.y);
    expect(new Set(ys).size).toBe(ys.length);
  });
});
