//! Client-side routing on the History API: every page has its own shareable path.

import { useSyncExternalStore } from "react";

const listeners = new Set<() => void>();

function notify(): void {
  for (const l of listeners) l();
}

if (typeof window !== "undefined") window.addEventListener("popstate", notify);

export function navigate(to: string): void {
  if (to === window.location.pathname + window.location.search) return;
  window.history.pushState(null, "", to);
  notify();
}

function subscribe(l: () => void): () => void {
  listeners.add(l);
  return () => listeners.delete(l);
}

export function useLocation(): { path: string; search: URLSearchParams } {
  const href = useSyncExternalStore(subscribe, () => window.location.pathname + window.location.search);
  const url = new URL(href, "http://dashboard");
  return { path: url.pathname, search: url.searchParams };
}

/** A path segment decoded; a malformed `%` escape is kept as typed rather than crashing. */
function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/** Matches `/runs/:id` against a path; the params, or null. */
export function matchPath(pattern: string, path: string): Record<string, string> | null {
  const p = pattern.split("/").filter(Boolean);
  const s = path.split("/").filter(Boolean);
  if (p.length !== s.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < p.length; i++) {
    const token = p[i] ?? "";
    const segment = s[i] ?? "";
    if (token.startsWith(":")) params[token.slice(1)] = decodeSegment(segment);
    else if (token !== segment) return null;
  }
  return params;
}

/** Replaces the query string (filters live in the URL so a filtered view can be shared). */
export function setQuery(path: string, query: Record<string, string | undefined>): void {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v) params.set(k, v);
  const s = params.toString();
  navigate(s ? `${path}?${s}` : path);
}
