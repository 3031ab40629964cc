//! The dashboard's shell: sign-in gate, navigation, environment switcher, and the page for the
//! current path.

import { useCallback, useState } from "react";
import { ApiProvider } from "./api/context";
import { loadSession, saveSession } from "./api/session";
import type { Session } from "./api/session";
import { Shell } from "./components/Shell";
import { useLocation, matchPath } from "./lib/router";
import { SignInGate } from "./pages/SignIn";
import { OverviewPage } from "./pages/Overview";
import { FunctionsPage, FunctionPage } from "./pages/Functions";
import { RunsPage } from "./pages/Runs";
import { RunPage } from "./pages/RunDetail";
import { EventsPage, EventPage } from "./pages/Events";
import { StreamsPage, StreamPage } from "./pages/Streams";
import { ProjectionsPage, ProjectionPage } from "./pages/Projections";
import { FlowPage } from "./pages/Flow";
import { KvPage, KvBucketPage, ConfigPage, SecretsPage, WorkersPage, GroupsPage, AuditPage } from "./pages/Resources";
import { EmptyState } from "./components/States";

type Page = (params: Record<string, string>) => React.ReactElement;

const ROUTES: [string, Page][] = [
  ["/", () => <OverviewPage />],
  ["/functions", () => <FunctionsPage />],
  ["/functions/:id", (p) => <FunctionPage key={p.id} id={p.id ?? ""} />],
  ["/runs", () => <RunsPage />],
  ["/runs/:id", (p) => <RunPage key={p.id} id={p.id ?? ""} />],
  ["/events", () => <EventsPage />],
  ["/events/:id", (p) => <EventPage key={p.id} id={p.id ?? ""} />],
  ["/streams", () => <StreamsPage />],
  ["/streams/:type/:id", (p) => <StreamPage key={`${p.type ?? ""}/${p.id ?? ""}`} entityType={p.type ?? ""} entityId={p.id ?? ""} />],
  ["/projections", () => <ProjectionsPage />],
  ["/projections/:name", (p) => <ProjectionPage key={p.name} name={p.name ?? ""} />],
  ["/flow", () => <FlowPage />],
  ["/kv", () => <KvPage />],
  ["/kv/:bucket", (p) => <KvBucketPage key={p.bucket} bucket={p.bucket ?? ""} />],
  ["/config", () => <ConfigPage />],
  ["/secrets", () => <SecretsPage />],
  ["/workers", () => <WorkersPage />],
  ["/groups", () => <GroupsPage />],
  ["/audit", () => <AuditPage />],
];

function CurrentPage() {
  const { path } = useLocation();
  for (const [pattern, page] of ROUTES) {
    const params = matchPath(pattern, path);
    if (params) return page(params);
  }
  return <EmptyState title={`Nothing at ${path}`} hint="Pick a page on the left." />;
}

export function App() {
  const [session, setSessionState] = useState<Session>(() => loadSession());
  const setSession = useCallback((s: Session) => {
    saveSession(s);
    setSessionState(s);
  }, []);
  return (
    <ApiProvider session={session} setSession={setSession}>
      <SignInGate>
        <Shell>
          <CurrentPage />
        </Shell>
      </SignInGate>
    </ApiProvider>
  );
}
