//! What a page shows while loading, when it has nothing yet, and when a call failed.

import type { ReactNode } from "react";

export function Loading() {
  return <p className="p-4 text-sm text-slate-500">Loading…</p>;
}

export function EmptyState({ title, hint }: { title: string; hint?: ReactNode }) {
  return (
    <div className="rounded border border-dashed border-slate-300 p-6 text-center">
      <p className="font-medium text-slate-700">{title}</p>
      {hint ? <div className="mt-2 text-sm text-slate-500">{hint}</div> : null}
    </div>
  );
}

export function ErrorState({ error, retry }: { error: Error; retry?: () => void }) {
  const status = (error as { status?: number }).status;
  const advice =
    status === 401 ? "Sign in again: the key or login has expired or was revoked."
      : status === 403 ? "Your key's roles do not allow this; ask an admin for a role that does."
        : status === 404 ? "It does not exist in this environment (check the environment switcher)."
          : "Check that the server is reachable, then retry.";
  return (
    <div role="alert" className="rounded border border-rose-200 bg-rose-50 p-4 text-sm text-rose-900">
      <p className="font-medium">{error.message}</p>
      <p className="mt-1">{advice}</p>
      {retry ? <button type="button" className="mt-2 rounded bg-rose-700 px-3 py-1 text-white" onClick={retry}>Retry</button> : null}
    </div>
  );
}
