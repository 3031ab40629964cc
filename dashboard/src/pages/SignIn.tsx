//! Sign-in: an API key, or a user's email and password (a login token). Under `--dev` the
//! server needs neither and the gate lets everyone in.

import type { FormEvent, ReactNode } from "react";
import { useState } from "react";
import { LiveFeedConnection, useApi, useClient } from "../api/context";
import { ApiError, Client } from "../api/client";
import { useResource } from "../lib/resource";
import { ErrorState, Loading } from "../components/States";

export function SignInGate({ children }: { children: ReactNode }) {
  const client = useClient();
  const probe = useResource(() => client.get<unknown>("/api/v1/capabilities"), [client]);
  if (probe.loading && !probe.data && !probe.error) return <Loading />;
  if (probe.error instanceof ApiError && probe.error.unauthenticated) return <SignIn reason={client.session.token ? probe.error.message : null} />;
  if (probe.error) return <div className="p-6"><ErrorState error={probe.error} retry={probe.reload} /></div>;
  return <><LiveFeedConnection />{children}</>;
}

function SignIn({ reason }: { reason: string | null }) {
  const { setSession } = useApi();
  const [mode, setMode] = useState<"key" | "login">("key");
  const [key, setKey] = useState("");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(reason);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      let token = key.trim();
      if (mode === "login") {
        const anonymous = new Client({ token: null, env: null });
        const answer = await anonymous.rest<{ token: string }>("POST", "/api/v1/platform/auth/login", { email, password });
        token = answer.token;
      }
      if (!token) throw new Error("enter an API key");
      await new Client({ token, env: null }).get("/api/v1/capabilities");
      setSession({ token, env: null });
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="mx-auto mt-24 max-w-sm rounded border border-slate-200 bg-white p-6 shadow">
      <h1 className="mb-4 text-xl font-semibold">Sign in to Ironflow</h1>
      <div role="tablist" className="mb-4 flex gap-2 text-sm">
        <button type="button" role="tab" aria-selected={mode === "key"} onClick={() => setMode("key")} className={mode === "key" ? "font-semibold" : "text-slate-500"}>API key</button>
        <button type="button" role="tab" aria-selected={mode === "login"} onClick={() => setMode("login")} className={mode === "login" ? "font-semibold" : "text-slate-500"}>User login</button>
      </div>
      <form onSubmit={(e) => void submit(e)} className="space-y-3">
        {mode === "key" ? (
          <label className="block text-sm">API key
            <input autoFocus name="api-key" value={key} onChange={(e) => setKey(e.target.value)} placeholder="ifkey_…" className="mt-1 w-full rounded border px-2 py-1 font-mono" />
          </label>
        ) : (
          <>
            <label className="block text-sm">Email
              <input autoFocus name="email" type="email" value={email} onChange={(e) => setEmail(e.target.value)} className="mt-1 w-full rounded border px-2 py-1" />
            </label>
            <label className="block text-sm">Password
              <input name="password" type="password" value={password} onChange={(e) => setPassword(e.target.value)} className="mt-1 w-full rounded border px-2 py-1" />
            </label>
          </>
        )}
        {error ? <p role="alert" className="text-sm text-rose-700">{error}</p> : null}
        <button type="submit" disabled={busy} className="w-full rounded bg-indigo-600 py-1.5 text-white disabled:opacity-50">{busy ? "Signing in…" : "Sign in"}</button>
      </form>
      <p className="mt-4 text-xs text-slate-500">The first start prints an admin key (also <code>--bootstrap-key-file</code>); more come from the API keys admin API. <code>ironflow serve --dev</code> needs none.</p>
    </div>
  );
}
