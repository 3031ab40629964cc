//! Connect JSON carries `bytes` fields as base64; the server puts JSON documents in them.

export function jsonFromBase64(b64: unknown): unknown {
  if (typeof b64 !== "string" || b64 === "") return null;
  try {
    const binary = atob(b64);
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes)) as unknown;
  } catch {
    return b64;
  }
}

export function base64FromJson(value: unknown): string {
  const bytes = new TextEncoder().encode(JSON.stringify(value));
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}
