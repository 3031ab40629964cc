//! Live updates: one WebSocket to `/ws` per session, subscribed to the server's system
//! events (`LIVE_PATTERNS`); pages register listeners by subject pattern.

import type { Session } from "./session";

export interface LiveMessage {
  subject: string;
  data: Record<string, unknown>;
  /** The `/ws` subscription it came through. */
  subscriptionId?: string;
}

type Listener = (message: LiveMessage) => void;

/** Does a NATS-style pattern (`*` one token, `>` the rest) match a subject? */
export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split(".");
  const s = subject.split(".");
  for (let i = 0; i < p.length; i++) {
    const token = p[i];
    if (token === ">") return s.length > i;
    if (i >= s.length) return false;
    if (token !== "*" && token !== s[i]) return false;
  }
  return p.length === s.length;
}

/** Reads one `/ws` frame; `null` for frames that are not events. */
export function parseFrame(text: string): LiveMessage | null {
  try {
    const frame: unknown = JSON.parse(text);
    if (typeof frame !== "object" || frame === null) return null;
    const f = frame as Record<string, unknown>;
    if (f.type !== "event") return null;
    const subject = typeof f.subject === "string" ? f.subject : typeof f.topic === "string" ? f.topic : "";
    const data = (typeof f.data === "object" && f.data !== null ? f.data : {}) as Record<string, unknown>;
    return typeof f.subscriptionId === "string" ? { subject, data, subscriptionId: f.subscriptionId } : { subject, data };
  } catch {
    return null;
  }
}

/** A successful `subscription_result` frame: the pattern and its subscription id. */
export function subscriptionResult(text: string): { pattern: string; id: string } | null {
  try {
    const f = JSON.parse(text) as Record<string, unknown>;
    if (f.type !== "subscription_result" || f.success !== true) return null;
    return typeof f.pattern === "string" && typeof f.subscriptionId === "string" ? { pattern: f.pattern, id: f.subscriptionId } : null;
  } catch {
    return null;
  }
}

export type LiveState = "connecting" | "live" | "offline";

/** What the feed subscribes to: runs, functions (and their breakers), config and secrets. */
export const LIVE_PATTERNS = ["system.run.>", "system.function.>", "system.config.>", "system.secret.>"];

export class LiveFeed {
  private socket: WebSocket | null = null;
  private readonly listeners = new Set<{ pattern: string; fn: Listener }>();
  /** Subscriptions opened on demand (`events:<name>`), by pattern, with their listeners. */
  private readonly extra = new Map<string, Set<Listener>>();
  /** The server's subscription id of each on-demand pattern. */
  private readonly extraIds = new Map<string, string>();
  private readonly stateListeners = new Set<() => void>();
  private retry = 500;
  private closed = false;
  private reconnect: number | undefined;
  state: LiveState = "connecting";
  private readonly session: Session;

  constructor(session: Session) {
    this.session = session;
  }

  start(): void {
    this.closed = false;
    this.open();
  }

  stop(): void {
    this.closed = true;
    window.clearTimeout(this.reconnect);
    this.socket?.close();
    this.socket = null;
  }

  subscribe(pattern: string, fn: Listener): () => void {
    if (pattern.startsWith("events:")) return this.subscribeExtra(pattern, fn);
    const entry = { pattern, fn };
    this.listeners.add(entry);
    return () => this.listeners.delete(entry);
  }

  /** An `events:` pattern gets a subscription of its own while anyone listens to it. */
  private subscribeExtra(pattern: string, fn: Listener): () => void {
    let set = this.extra.get(pattern);
    if (!set) {
      set = new Set();
      this.extra.set(pattern, set);
      this.send({ type: "subscribe", pattern });
    }
    set.add(fn);
    return () => {
      const current = this.extra.get(pattern);
      current?.delete(fn);
      if (current && current.size === 0) {
        this.extra.delete(pattern);
        const id = this.extraIds.get(pattern);
        this.extraIds.delete(pattern);
        if (id) this.send({ type: "unsubscribe", subscriptionId: id });
      }
    };
  }

  private send(frame: Record<string, unknown>): void {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(frame));
  }

  /** For `useSyncExternalStore`: `fn` is called after every state change. */
  onState(fn: () => void): () => void {
    this.stateListeners.add(fn);
    return () => this.stateListeners.delete(fn);
  }

  private setState(s: LiveState): void {
    this.state = s;
    for (const fn of this.stateListeners) fn();
  }

  private open(): void {
    if (this.closed) return;
    const params = new URLSearchParams();
    if (this.session.token) params.set("token", this.session.token);
    if (this.session.env) params.set("env", this.session.env);
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}/ws?${params.toString()}`);
    this.socket = socket;
    socket.onopen = () => {
      this.retry = 500;
      this.extraIds.clear();
      for (const pattern of [...LIVE_PATTERNS, ...this.extra.keys()]) {
        socket.send(JSON.stringify({ type: "subscribe", pattern }));
      }
      this.setState("live");
    };
    socket.onmessage = (e: MessageEvent<string>) => {
      if (this.socket !== socket) return;
      const result = subscriptionResult(e.data);
      if (result && this.extra.has(result.pattern)) {
        this.extraIds.set(result.pattern, result.id);
        return;
      }
      const message = parseFrame(e.data);
      if (!message) return;
      for (const [pattern, id] of this.extraIds) {
        if (id === message.subscriptionId) {
          for (const fn of this.extra.get(pattern) ?? []) fn(message);
          return;
        }
      }
      for (const l of this.listeners) if (subjectMatches(l.pattern, message.subject)) l.fn(message);
    };
    socket.onclose = () => {
      // A socket this feed already replaced (or a stopped feed) says nothing about the feed.
      if (this.closed || this.socket !== socket) return;
      this.setState("offline");
      // Reconnect with backoff; pages reload their data when the feed is live again.
      this.reconnect = window.setTimeout(() => this.open(), this.retry);
      this.retry = Math.min(this.retry * 2, 10_000);
    };
  }
}
