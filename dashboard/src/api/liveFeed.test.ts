import { afterEach, describe, expect, it, vi } from "vitest";
import { LiveFeed, subscriptionResult } from "./live";

class FakeSocket {
  static OPEN = 1;
  static last: FakeSocket | null = null;
  readyState = 0;
  sent: Record<string, unknown>[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((e: { data: string }) => void) | null = null;
  onclose: (() => void) | null = null;
  constructor(readonly url: string) { FakeSocket.last = this; }
  send(text: string) { this.sent.push(JSON.parse(text) as Record<string, unknown>); }
  close() { this.readyState = 3; }
  open() { this.readyState = 1; this.onopen?.(); }
  receive(frame: unknown) { this.onmessage?.({ data: JSON.stringify(frame) }); }
}

afterEach(() => vi.unstubAllGlobals());

describe("LiveFeed", () => {
  it("opens an events: subscription on demand and routes its frames by subscription id", () => {
    vi.stubGlobal("WebSocket", FakeSocket);
    const feed = new LiveFeed({ token: "ifkey_t", env: null });
    feed.start();
    const socket = FakeSocket.last as FakeSocket;
    expect(socket.url).toContain("token=ifkey_t");
    socket.open();
    expect(feed.state).toBe("live");
    expect(socket.sent.map((f) => f.pattern)).toContain("system.run.>");

    const onOrder = vi.fn();
    const onRuns = vi.fn();
    feed.subscribe("system.run.>", onRuns);
    const stop = feed.subscribe("events:order.*", onOrder);
    expect(socket.sent.at(-1)).toEqual({ type: "subscribe", pattern: "events:order.*" });
    socket.receive({ type: "subscription_result", pattern: "events:order.*", subscriptionId: "sub_9", success: true });
    socket.receive({ type: "event", subscriptionId: "sub_9", topic: "order.placed", data: { n: 1 } });
    expect(onOrder).toHaveBeenCalledTimes(1);
    expect(onRuns).not.toHaveBeenCalled();
    socket.receive({ type: "event", subscriptionId: "sub_1", topic: "system.run.r1.run.created", data: {} });
    expect(onRuns).toHaveBeenCalledTimes(1);

    stop();
    expect(socket.sent.at(-1)).toEqual({ type: "unsubscribe", subscriptionId: "sub_9" });
    feed.stop();
  });

  it("reads only successful subscription results", () => {
    expect(subscriptionResult('{"type":"subscription_result","pattern":"events:a","subscriptionId":"s","success":true}')).toEqual({ pattern: "events:a", id: "s" });
    expect(subscriptionResult('{"type":"subscription_result","pattern":"events:a","success":false}')).toBeNull();
  });
});
