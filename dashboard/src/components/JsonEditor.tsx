//! A JSON text area that validates as you type and only submits a value that parses.

import { useState } from "react";
import { parseJson } from "../lib/json";

export function JsonEditor({ initial, submitLabel, onSubmit, busy }: { initial: unknown; submitLabel: string; onSubmit: (value: unknown) => void; busy?: boolean }) {
  const [text, setText] = useState(() => JSON.stringify(initial ?? null, null, 2));
  const parsed = parseJson(text);
  return (
    <div className="space-y-1">
      <textarea aria-label="JSON value" spellCheck={false} value={text} onChange={(e) => setText(e.target.value)} rows={6} className={`w-full rounded border p-2 font-mono text-xs ${parsed.ok ? "border-slate-300" : "border-rose-500"}`} />
      {!parsed.ok ? <p role="alert" className="text-xs text-rose-700">Not valid JSON: {parsed.error}</p> : null}
      <button type="button" disabled={!parsed.ok || busy} onClick={() => { if (parsed.ok) onSubmit(parsed.value); }} className="rounded bg-indigo-600 px-3 py-1 text-xs text-white disabled:opacity-40">{submitLabel}</button>
    </div>
  );
}
