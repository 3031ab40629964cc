//! The data layer's transport: REST and Connect (JSON) calls with the session's credentials,
//! and one error type whose message is the server's own explanation.

import type { Session } from "./session";

/** A failed call: the HTTP status and the server's `{code, message}` body. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
  get unauthenticated(): boolean {
    return this.status === 401;
  }
}

export type Fetch = typeof fetch;

function headers(session: Session, json: boolean): Record<string, string> {
  const h: Record<string, string> = {};
  if (json) h["content-type"] = "application/json";
  if (session.token) h.authorization = `Bearer ${session.token}`;
  if (session.env) h["x-ironflow-environment"] = session.env;
  return h;
}

/** Reads the server's error body (`{code, message}` or `{error: {code, message}}`). */
export async function errorFrom(response: Response): Promise<ApiError> {
  let code = "unknown";
  let message = `${response.status} ${response.statusText}`;
  try {
    const body: unknown = await response.json();
    if (typeof body === "object" && body !== null) {
      const record = body as Record<string, unknown>;
      const inner = (typeof record.error === "object" && record.error !== null ? record.error : record) as Record<string, unknown>;
      if (typeof inner.message === "string") message = inner.message;
      else if (typeof record.error === "string") message = record.error;
      if (typeof inner.code === "string") code = inner.code;
    }
  } catch {
    // Not JSON (a proxy's page): keep the status line.
  }
  return new ApiError(response.status, code, message);
}

export class Client {
  readonly session: Session;
  private readonly fetcher: Fetch;

  constructor(session: Session, fetcher: Fetch = (input, init) => fetch(input, init)) {
    this.session = session;
    this.fetcher = fetcher;
  }

  async rest<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await this.fetcher(path, {
      method,
      headers: headers(this.session, body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) throw await errorFrom(response);
    if (response.status === 204) return undefined as T;
    return (await response.json()) as T;
  }

  get<T>(path: string, query?: Record<string, string | number | undefined | null>): Promise<T> {
    return this.rest<T>("GET", withQuery(path, query));
  }

  /** A Connect unary call with the JSON codec: `POST /ironflow.v1.<service>/<method>`. */
  async connect<T>(service: string, method: string, body: unknown = {}): Promise<T> {
    const response = await this.fetcher(`/ironflow.v1.${service}/${method}`, {
      method: "POST",
      headers: headers(this.session, true),
      body: JSON.stringify(body),
    });
    if (!response.ok) throw await errorFrom(response);
    return (await response.json()) as T;
  }
}

export function withQuery(path: string, query?: Record<string, string | number | undefined | null>): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== "") params.set(k, String(v));
  }
  const s = params.toString();
  return s ? `${path}?${s}` : path;
}
