//! The frame around every page: navigation, the live indicator, the environment switcher.

import type { ReactNode } from "react";
import { useEffect } from "react";
import { useApi, useClient, useLiveState } from "../api/context";
import { navigate, useLocation } from "../lib/router";
import { useResource } from "../lib/resource";
import { Link } from "./Link";
import { rowsOf } from "../lib/rows";

const NAV: [string, string, string][] = [
  ["/", "Overview", "g o"],
  ["/functions", "Functions", "g f"],
  ["/runs", "Runs", "g r"],
  ["/events", "Events", "g e"],
  ["/streams", "Entity streams", "g s"],
  ["/projections", "Projections", "g p"],
  ["/flow", "Flow", "g l"],
  ["/kv", "KV", "g k"],
  ["/config", "Config", "g c"],
  ["/secrets", "Secrets", "g x"],
  ["/workers", "Workers", "g w"],
  ["/groups", "Consumer groups", "g g"],
  ["/audit", "Audit log", "g a"],
];

interface Environment { id: string; name: string }

function EnvironmentSwitcher() {
  const { session, setSession } = useApi();
  const client = useClient();
  const envs = useResource(async () => rowsOf(await client.get("/api/v1/environments")) as unknown as Environment[], [client]);
  const list = envs.data ?? [];
  if (envs.error || list.length === 0) return <span className="text-xs text-slate-400">{session.env ?? "default environment"}</span>;
  return (
    <label className="text-xs text-slate-300">
      Environment{" "}
      <select
        aria-label="Environment"
        className="rounded bg-slate-700 px-1 py-0.5 text-slate-100"
        value={session.env ?? ""}
        onChange={(e) => setSession({ ...session, env: e.target.value || null })}
      >
        <option value="">key's own</option>
        {list.map((env) => <option key={env.id} value={env.id}>{env.name}</option>)}
      </select>
    </label>
  );
}

/** `g` then a letter jumps to a page (the letters are in the nav's titles). */
function useKeyboardNavigation(): void {
  useEffect(() => {
    let pending = false;
    const onKey = (e: KeyboardEvent) => {
      const target = e.target as HTMLElement | null;
      if (target && ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName)) return;
      if (pending) {
        pending = false;
        const hit = NAV.find(([, , keys]) => keys === `g ${e.key}`);
        if (hit) navigate(hit[0]);
        return;
      }
      if (e.key === "g") pending = true;
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);
}

export function Shell({ children }: { children: ReactNode }) {
  const { path } = useLocation();
  const live = useLiveState();
  const { session, setSession } = useApi();
  useKeyboardNavigation();
  return (
    <div className="flex min-h-screen">
      <nav aria-label="Pages" className="w-52 shrink-0 bg-slate-800 p-3 text-sm text-slate-200">
        <div className="mb-4 text-lg font-semibold text-white">Ironflow</div>
        <ul>
          {NAV.map(([to, title, keys]) => {
            const active = to === "/" ? path === "/" : path.startsWith(to);
            return (
              <li key={to}>
                <Link to={to} className={`block rounded px-2 py-1 ${active ? "bg-slate-600 text-white" : "hover:bg-slate-700"}`}>
                  <span title={`keyboard: ${keys}`}>{title}</span>
                </Link>
              </li>
            );
          })}
        </ul>
        <div className="mt-6 space-y-2">
          <div data-live={live} className="text-xs">
            <span className={`mr-1 inline-block h-2 w-2 rounded-full ${live === "live" ? "bg-emerald-400" : live === "connecting" ? "bg-amber-400" : "bg-rose-500"}`} />
            {live === "live" ? "Live" : live === "connecting" ? "Connecting…" : "Offline — reconnecting"}
          </div>
          <EnvironmentSwitcher />
          {session.token ? (
            <button type="button" className="text-xs text-slate-400 hover:text-white" onClick={() => setSession({ token: null, env: null })}>Sign out</button>
          ) : null}
        </div>
      </nav>
      <main className="min-w-0 flex-1 p-6">{children}</main>
    </div>
  );
}
