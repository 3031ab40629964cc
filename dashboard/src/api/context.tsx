//! The session's client and live feed, shared by every page.

import { createContext, useCallback, useContext, useEffect, useLayoutEffect, useMemo, useRef, useSyncExternalStore } from "react";
import type { ReactNode } from "react";
import { Client } from "./client";
import { LiveFeed } from "./live";
import type { LiveMessage, LiveState } from "./live";
import type { Session } from "./session";

interface Api {
  client: Client;
  feed: LiveFeed;
  session: Session;
  setSession: (s: Session) => void;
}

const ApiContext = createContext<Api | null>(null);

export function ApiProvider({ session, setSession, children }: { session: Session; setSession: (s: Session) => void; children: ReactNode }) {
  const api = useMemo<Api>(() => ({ client: new Client(session), feed: new LiveFeed(session), session, setSession }), [session, setSession]);
  useEffect(() => () => api.feed.stop(), [api]);
  return <ApiContext.Provider value={api}>{children}</ApiContext.Provider>;
}

export function useApi(): Api {
  const api = useContext(ApiContext);
  if (!api) throw new Error("useApi outside ApiProvider");
  return api;
}

/** Opens the session's live feed while mounted (inside the sign-in gate: no socket before it). */
export function LiveFeedConnection() {
  const { feed } = useApi();
  useEffect(() => {
    feed.start();
    return () => feed.stop();
  }, [feed]);
  return null;
}

export function useClient(): Client {
  return useApi().client;
}

/** Calls `onMessage` for each live message matching `pattern` while mounted. */
export function useLive(pattern: string | null, onMessage: (m: LiveMessage) => void): void {
  const { feed } = useApi();
  const handler = useRef(onMessage);
  useLayoutEffect(() => {
    handler.current = onMessage;
  });
  useEffect(() => {
    if (!pattern) return;
    return feed.subscribe(pattern, (m) => handler.current(m));
  }, [feed, pattern]);
}

export function useLiveState(): LiveState {
  const { feed } = useApi();
  // An external store: a change between render and subscription is not missed.
  const subscribe = useCallback((fn: () => void) => feed.onState(fn), [feed]);
  return useSyncExternalStore(subscribe, () => feed.state);
}
