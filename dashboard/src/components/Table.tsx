//! A list as a table: named columns, one row per item, keyboard-focusable rows that open.

import type { ReactNode } from "react";

export interface Column<T> {
  title: string;
  cell: (item: T) => ReactNode;
}

export function Table<T>({ items, columns, rowKey, onOpen, label }: {
  items: readonly T[];
  columns: readonly Column<T>[];
  rowKey: (item: T) => string;
  onOpen?: (item: T) => void;
  label: string;
}) {
  return (
    <table aria-label={label} className="w-full border-collapse text-sm">
      <thead>
        <tr className="border-b border-slate-200 text-left text-xs uppercase text-slate-500">
          {columns.map((c) => <th key={c.title} className="px-2 py-1 font-medium">{c.title}</th>)}
        </tr>
      </thead>
      <tbody>
        {items.map((item) => (
          <tr
            key={rowKey(item)}
            data-key={rowKey(item)}
            tabIndex={onOpen ? 0 : undefined}
            onKeyDown={onOpen ? (e) => { if (e.key === "Enter") onOpen(item); } : undefined}
            className="border-b border-slate-100 hover:bg-slate-100 focus:bg-indigo-50 focus:outline-none"
          >
            {columns.map((c) => <td key={c.title} className="px-2 py-1 align-top">{c.cell(item)}</td>)}
          </tr>
        ))}
      </tbody>
    </table>
  );
}
