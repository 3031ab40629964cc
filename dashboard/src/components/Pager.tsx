//! Cursor paging: the first page, then "next" while the server says there is more.

export function Pager({ hasNext, onNext, onFirst, atFirst }: { hasNext: boolean; onNext: () => void; onFirst: () => void; atFirst: boolean }) {
  return (
    <div className="mt-2 flex gap-2 text-sm">
      <button type="button" disabled={atFirst} onClick={onFirst} className="rounded border px-2 py-0.5 disabled:opacity-40">First page</button>
      <button type="button" disabled={!hasNext} onClick={onNext} className="rounded border px-2 py-0.5 disabled:opacity-40">Next page</button>
    </div>
  );
}
