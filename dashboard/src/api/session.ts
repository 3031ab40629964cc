//! The signed-in session: the bearer token (an API key or a user login's token) and the
//! chosen environment, kept in localStorage so a reload or a shared link stays signed in.

export interface Session {
  /** `ifkey_…` or a login token; null under `--dev`, where the server needs none. */
  token: string | null;
  /** An environment id or name; null means the key's own environment. */
  env: string | null;
}

const KEY = "ironflow.session";

export function loadSession(storage: Storage = window.localStorage): Session {
  try {
    const raw = storage.getItem(KEY);
    if (!raw) return { token: null, env: null };
    const parsed: unknown = JSON.parse(raw);
    if (typeof parsed !== "object" || parsed === null) return { token: null, env: null };
    const record = parsed as Record<string, unknown>;
    return {
      token: typeof record.token === "string" ? record.token : null,
      env: typeof record.env === "string" ? record.env : null,
    };
  } catch {
    return { token: null, env: null };
  }
}

export function saveSession(session: Session, storage: Storage = window.localStorage): void {
  storage.setItem(KEY, JSON.stringify(session));
}
