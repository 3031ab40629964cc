//! A JSON value, collapsible, with a copy of its text.

import { useState } from "react";

export function JsonView({ value, label, open = false }: { value: unknown; label: string; open?: boolean }) {
  const [expanded, setExpanded] = useState(open);
  const text = value === undefined ? "undefined" : JSON.stringify(value, null, 2);
  const short = text.length > 80 ? `${text.replace(/\s+/g, " ").slice(0, 77)}…` : text.replace(/\s+/g, " ");
  return (
    <div className="text-xs">
      <button type="button" aria-expanded={expanded} className="font-medium text-slate-600 hover:text-slate-900" onClick={() => setExpanded(!expanded)}>
        {expanded ? "▾" : "▸"} {label}
      </button>
      {expanded ? (
        <pre className="mt-1 max-h-96 overflow-auto rounded bg-slate-900 p-2 text-slate-100">{text}</pre>
      ) : (
        <code className="ml-2 text-slate-500">{short}</code>
      )}
    </div>
  );
}
