//! The JSON editor's check: parse what the user typed, or say where it is wrong.

export type Parsed = { ok: true; value: unknown } | { ok: false; error: string };

export function parseJson(text: string): Parsed {
  if (text.trim() === "") return { ok: false, error: "enter a JSON value" };
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (e) {
    return { ok: false, error: e instanceof Error ? e.message : "not valid JSON" };
  }
}
